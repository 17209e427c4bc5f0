"""Seq2Seq: whole-model gradient check, padding behaviour, decoding that agrees with teacher forcing,
beam search against exhaustive search, and input validation."""
import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose

from npllm.gradcheck import check_params
from npllm.layers import cross_entropy_backward, cross_entropy_forward
from npllm.models import Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS = 0, 1, 2


def _tiny(dtype=np.float64, seed=0, tgt_vocab=6, **sizes):
    config = Seq2SeqConfig(src_vocab_size=7, tgt_vocab_size=tgt_vocab, **{"embed_size": 3, "hidden_size": 4,
                                                                           "attention_size": 3, **sizes})
    return Seq2Seq(config, seed=seed, dtype=dtype)


# Row 0 is full length, row 1 padded after 2 tokens; the targets end in <eos> then padding (-100 ignored).
SRC = np.array([[3, 4, 5, 6, 3], [6, 5, PAD, PAD, PAD]])
TGT_IN = np.array([[BOS, 3, 4, 5], [BOS, 5, PAD, PAD]])
TGT_OUT = np.array([[3, 4, 5, EOS], [5, EOS, -100, -100]])


def test_seq2seq_backward_matches_numerical_gradient_for_every_parameter():
    model = _tiny()
    # Larger random weights than the init, so no gradient is tiny and every path is exercised (with the
    # init's small attention weights, the scores are nearly flat and W_q's gradient is ~1e-5: its
    # relative error would then measure round-off, not the backward).
    rng = np.random.default_rng(1)
    for name, value in model.params.items():
        value += (1.5 if name.startswith("attention") else 0.3) * rng.standard_normal(value.shape)

    def loss_fn():
        logits, _ = model.forward(SRC, TGT_IN)
        return cross_entropy_forward(logits, TGT_OUT)[0]

    logits, cache = model.forward(SRC, TGT_IN)
    _, ce_cache = cross_entropy_forward(logits, TGT_OUT)
    grads = model.backward(cross_entropy_backward(1.0, ce_cache), cache)
    assert list(grads) == list(model.params)
    # eps = 1e-5: the loss is a deep composition whose round-off (≈ 1e-16 · |L| / eps) dominates at the
    # default 1e-6 for the small attention gradients; the O(eps²) truncation error stays far below tol.
    report = check_params(loss_fn, model.params, grads, max_entries=None, eps=1e-5)
    assert report.passed, str(report)


def test_source_padding_changes_nothing():
    """A row's outputs do not depend on how much padding follows it, nor on the padding's embedding."""
    model = _tiny()
    logits, cache = model.forward(SRC, TGT_IN)
    short_logits, _ = model.forward(SRC[1:, :2], TGT_IN[1:])
    assert_allclose(logits[1], short_logits[0], rtol=1e-12, atol=1e-12)
    assert np.all(cache.weights[1, :, 2:] == 0.0)                   # no attention on padding
    _, ce_cache = cross_entropy_forward(logits, TGT_OUT)
    grads = model.backward(cross_entropy_backward(1.0, ce_cache), cache)
    assert np.all(grads["src_embedding.weight"][PAD] == 0.0)       # padding never reaches the loss


def test_greedy_decoding_agrees_with_teacher_forcing():
    """Feeding the greedy output back through forward() gives the same per-step distributions."""
    model = _tiny(seed=3)
    tokens, weights = model.greedy_decode(SRC, max_len=6)
    tgt_in = np.concatenate([np.full((2, 1), BOS), tokens[:, :-1]], axis=1)
    tgt_in[tgt_in == EOS] = PAD
    logits, cache = model.forward(SRC, tgt_in)
    log_probs = model.output_log_probs(logits)
    for b in range(2):
        n = int(np.argmax(tokens[b] == EOS)) + 1 if EOS in tokens[b] else tokens.shape[1]
        assert_allclose(weights[b, :n], cache.weights[b, :n], rtol=1e-10, atol=1e-12)
        assert np.array_equal(log_probs[b, :n].argmax(axis=-1), tokens[b, :n])
        assert np.all(tokens[b, n:] == PAD)


def _sequence_log_prob(model, src_row, sequence):
    """log p(sequence | source) by teacher forcing, with <pad>/<bos> excluded as decoding excludes them."""
    tgt_in = np.array([[BOS] + sequence[:-1]]) if sequence else None
    logits, _ = model.forward(src_row[None], tgt_in)
    log_probs = model.output_log_probs(logits)[0]
    return sum(log_probs[t, token] for t, token in enumerate(sequence))


def test_beam_search_with_a_wide_beam_finds_the_most_likely_sequence():
    # Tokens a decoder may emit: <eos>, 3, 4.  All sequences of length <= 3 are few enough to enumerate.
    model = _tiny(seed=5, tgt_vocab=5)
    for name in model.params:
        model.params[name] *= 3.0                                  # peakier, more varied distributions
    src = np.array([[3, 4, 4, 3], [4, 3, PAD, PAD]])
    max_len = 3
    hypotheses, scores = model.beam_search(src, max_len=max_len, beam_size=27)
    for b in range(2):
        candidates = [list(body) + [EOS] for n in range(max_len) for body in itertools.product([3, 4], repeat=n)]
        candidates += [list(body) for body in itertools.product([3, 4], repeat=max_len)]   # cut at max_len
        log_probs = [_sequence_log_prob(model, src[b], seq) for seq in candidates]
        best = candidates[int(np.argmax(log_probs))]
        assert hypotheses[b] == [t for t in best if t != EOS]
        assert scores[b] == pytest.approx(max(log_probs), rel=1e-10)


def test_beam_search_of_width_one_is_greedy():
    model = _tiny(seed=7)
    tokens, _ = model.greedy_decode(SRC, max_len=6)
    hypotheses, _ = model.beam_search(SRC, max_len=6, beam_size=1)
    for b in range(2):
        row = tokens[b].tolist()
        assert hypotheses[b] == (row[:row.index(EOS)] if EOS in row else row)


def test_forward_is_float32_for_a_float32_model():
    model = _tiny(dtype=np.float32)
    logits, cache = model.forward(SRC, TGT_IN)
    grads = model.backward(np.ones_like(logits), cache)
    assert logits.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("src, tgt_in, error, words", [
    (np.array([[3, PAD, 4]]), np.array([[BOS]]), ValueError, "right-padded"),
    (np.array([[PAD, PAD]]), np.array([[BOS]]), ValueError, "only padding"),
    (np.array([[3, 9]]), np.array([[BOS]]), ValueError, r"src must lie in \[0, 7\)"),
    (np.array([[3.0]]), np.array([[BOS]]), TypeError, "src must be an integer"),
    ([[3]], np.array([[BOS]]), TypeError, "src must be an integer numpy.ndarray of shape \\(B, T\\), got list"),
    (np.array([[3], [4]]), np.array([[BOS]]), ValueError, "tgt_in must have src's batch size 2"),
])
def test_seq2seq_forward_names_bad_inputs(src, tgt_in, error, words):
    with pytest.raises(error, match=words):
        _tiny().forward(src, tgt_in)


def test_config_rejects_clashing_special_ids():
    with pytest.raises(ValueError, match="distinct"):
        Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=5, pad_id=0, bos_id=0)


# ---------------------------------------------------------------- data pipeline and the command line
import json  # noqa: E402

from npllm.commands import main  # noqa: E402
from npllm.datasets.pairs import IGNORE_INDEX, UNK_ID, Vocab, encode_pairs, make_batch  # noqa: E402
from npllm.training.seq2seq import BucketSampler, load_seq2seq, translate  # noqa: E402


def test_batches_shift_the_target_for_teacher_forcing():
    pairs = [("ab", "xy"), ("abba", "z")]
    src_vocab, tgt_vocab = Vocab.build(["a", "b"]), Vocab.build(["x", "y", "z"])
    batch = make_batch(encode_pairs(pairs, src_vocab, tgt_vocab, "char"), [0, 1])
    x, y, z = tgt_vocab.encode("xyz")
    assert batch.src.tolist() == [src_vocab.encode("ab") + [PAD, PAD], src_vocab.encode("abba")]
    assert batch.tgt_in.tolist() == [[BOS, x, y], [BOS, z, PAD]]            # <bos> y_1 … y_n
    assert batch.tgt_out.tolist() == [[x, y, EOS], [z, EOS, IGNORE_INDEX]]  # y_1 … y_n <eos>
    assert batch.n_tokens == 5
    assert tgt_vocab.decode([x, EOS, y]) == ["x"] and src_vocab.encode("c") == [UNK_ID]


def test_bucketed_batches_visit_every_row_once_per_epoch():
    lengths = np.random.default_rng(0).integers(1, 30, size=1000)
    sampler, rng = BucketSampler(lengths, 32), np.random.default_rng(1)
    epoch = [sampler.next(rng) for _ in range(32)]                          # ceil(1000 / 32) batches
    assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    assert np.mean([np.ptp(lengths[b]) for b in epoch]) < 3                 # similar lengths together


def test_bucket_sampler_state_resumes_mid_epoch_with_the_same_batches():
    lengths = np.random.default_rng(0).integers(1, 30, size=300)
    whole, rng = BucketSampler(lengths, 16), np.random.default_rng(2)
    expected = [whole.next(rng) for _ in range(30)]                          # crosses an epoch boundary
    first, rng = BucketSampler(lengths, 16), np.random.default_rng(2)
    head = [first.next(rng) for _ in range(7)]
    state, rng_after = first.state(), rng.bit_generator.state
    second, rng = BucketSampler(lengths, 16), np.random.default_rng()
    rng.bit_generator.state = rng_after
    second.load_state(state)
    tail = [second.next(rng) for _ in range(23)]
    assert all(np.array_equal(a, b) for a, b in zip(head + tail, expected))


def _train(tmp_path, capsys, *flags):
    status = main(["train", "--out-dir", str(tmp_path), "--no-progress", "--seed", "0", *flags])
    out = capsys.readouterr()
    return status, out.out.strip().splitlines(), out.err


def test_train_seq2seq_on_dates_writes_the_summary_plots_and_checkpoint(tmp_path, capsys):
    status, lines, _ = _train(tmp_path, capsys, "--task", "dates", "--max-iters", "4", "--eval-interval", "2",
                              "--hidden-size", "16", "--n-embd", "8", "--samples", "1")
    assert status == 0
    summary = json.loads(lines[-1])
    for key in ("final_train_loss", "final_val_loss", "val_perplexity", "tokens_per_second", "seconds",
                "iters", "checkpoint", "exact_match", "char_accuracy"):
        assert key in summary
    assert summary["iters"] == 4 and 0.0 <= summary["exact_match"] <= summary["char_accuracy"] <= 1.0
    assert summary["n_eval"] == 2000
    for name in ("ckpt.safetensors", "metrics.jsonl", "loss.png", "attention_0.png", "attention_2.png"):
        assert (tmp_path / name).is_file()
    # The checkpoint restores the model and its vocabularies.
    model, src_vocab, tgt_vocab, level = load_seq2seq(summary["checkpoint"])
    assert model.config.hidden_size == 16 and level == "char"
    assert len(translate(model, src_vocab, tgt_vocab, level, ["3 sep 1995", "01/02/03"], beam_size=2)) == 2


def test_train_seq2seq_on_user_pairs_learns_and_reports_bleu(tmp_path, capsys):
    # A toy "translation": each English word has one French word, order kept; 4-6 words so BLEU-4 is defined.
    lexicon = {"red": "rouge", "green": "vert", "blue": "bleu", "cat": "chat", "dog": "chien", "sun": "soleil"}
    rng = np.random.default_rng(0)
    lines = [list(rng.choice(list(lexicon), size=rng.integers(4, 7))) for _ in range(400)]
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{' '.join(w)}\t{' '.join(lexicon[x] for x in w)}\n" for w in lines), encoding="utf-8")
    status, out, _ = _train(tmp_path / "run", capsys, "--model", "seq2seq", "--data", str(data), "--tokenizer",
                            "word", "--max-iters", "400", "--batch-size", "32", "--hidden-size", "32")
    assert status == 0
    summary = json.loads(out[-1])
    assert summary["n_eval"] == 40                                          # the last 10% held out
    assert summary["exact_match"] > 0.8 and summary["bleu"] > 85           # seed 0: 0.925 and 96.3


@pytest.mark.parametrize("flags, words", [
    (["--task", "dates", "--data", "x.tsv"], "--data: give either"),
    (["--model", "lstm", "--task", "dates"], "--task: --task dates trains a seq2seq model"),
    (["--task", "dates", "--n-layer", "2"], "--n-layer: the seq2seq encoder and decoder have one"),
    (["--task", "dates", "--tokenizer", "bpe"], "--tokenizer"),
    (["--model", "seq2seq", "--init-from", "gpt2"], "--init-from"),
])
def test_train_seq2seq_usage_errors_name_the_flag(tmp_path, capsys, flags, words):
    status, _, err = _train(tmp_path, capsys, *flags)
    assert status == 2 and words in err


def test_generate_refuses_a_seq2seq_checkpoint_clearly(tmp_path, capsys):
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{i}\t{i * 2}\n" for i in range(20)), encoding="utf-8")
    _train(tmp_path / "run", capsys, "--model", "seq2seq", "--data", str(data), "--max-iters", "1",
           "--hidden-size", "8", "--n-embd", "4", "--samples", "0")
    status = main(["generate", "--checkpoint", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "'seq2seq' is not a language model" in err
