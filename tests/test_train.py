"""The training loop: it learns, resumes bit for bit, stops cleanly on Ctrl-C, NaN and patience."""
import json
import signal

import numpy as np
import pytest
from numpy.testing import assert_allclose

import npllm.training.loop as loop_module
from npllm.checkpoint import load_checkpoint
from npllm.commands import main
from npllm.layers import cross_entropy_backward, cross_entropy_forward
from npllm.models import GPT, GPTConfig
from npllm.optim import AdamW
from npllm.training import TrainConfig, start_run
from npllm.training.lm import LanguageModelTask

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--eval-interval", "5", "--no-progress", "--samples", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "pattern.txt"
    path.write_text("abcdefghij" * 120)
    return path


def train(tmp_path, corpus, out, *extra):
    status = main(["train", "--data", str(corpus), "--out-dir", str(tmp_path / out), *TINY, *extra])
    rows = [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
    return status, rows


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_loss_decreases_on_a_repeated_pattern(tmp_path, corpus, capsys, model):
    status, rows = train(tmp_path, corpus, "out", "--model", model, "--hidden-size", "32",
                         "--max-iters", "40", "--lr", "1e-2")
    summary = last_json(capsys)
    assert status == 0
    assert rows[0]["train_loss"] > 2.0                 # ln(10) = 2.30 at the start
    assert summary["final_val_loss"] < 0.5 * rows[0]["train_loss"]
    assert summary["final_val_loss"] < summary["unigram_baseline"]


def test_gpt_overfits_a_single_batch_to_near_zero():
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=32), seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 12, (4, 16)), rng.integers(0, 12, (4, 16))    # random targets: pure memorising
    optimizer = AdamW(3e-3, weight_decay=0.0)
    for _ in range(150):
        logits, cache = model.forward(x)
        loss, ce_cache = cross_entropy_forward(logits, y)
        optimizer.step(model.params, model.backward(cross_entropy_backward(1.0, ce_cache), cache))
    assert loss < 0.05


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, corpus):
    # The schedule is fixed by --lr-decay-iters, so stopping at 6 and resuming to 12 changes nothing.
    schedule = ["--lr-decay-iters", "12", "--dropout", "0.1", "--eval-interval", "4"]
    _, whole = train(tmp_path, corpus, "whole", "--max-iters", "12", *schedule)
    train(tmp_path, corpus, "split", "--max-iters", "6", *schedule)
    assert load_checkpoint(tmp_path / "split").meta["step"] == 6
    _, resumed = train(tmp_path, corpus, "split", "--max-iters", "12", *schedule, "--resume")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in whole]
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert all(np.array_equal(a.optimizer_arrays[k], b.optimizer_arrays[k]) for k in a.optimizer_arrays)


def test_resume_refuses_when_max_iters_is_already_reached(tmp_path, corpus, capsys):
    train(tmp_path, corpus, "out", "--max-iters", "5")
    capsys.readouterr()
    assert main(["train", "--out-dir", str(tmp_path / "out"), "--max-iters", "5", "--resume", *TINY]) == 2
    assert "--max-iters" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path, corpus, monkeypatch, capsys):
    real_step = loop_module.train_step

    def step_then_interrupt(run, lr):
        result = real_step(run, lr)
        if run.step == 2:                        # during the third step
            signal.raise_signal(signal.SIGINT)
        return result
    monkeypatch.setattr(loop_module, "train_step", step_then_interrupt)
    status, rows = train(tmp_path, corpus, "out", "--max-iters", "8")
    assert status == 130
    assert load_checkpoint(tmp_path / "out").meta["step"] == 3          # the step in progress finished
    assert "interrupted at step 3" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    monkeypatch.setattr(loop_module, "train_step", real_step)
    status, rows = train(tmp_path, corpus, "out", "--max-iters", "8", "--resume")
    assert status == 0 and [r["step"] for r in rows] == list(range(1, 9))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch, capsys):
    real_step = loop_module.train_step

    def diverge_at_step_7(run, lr):
        loss, norm, tokens = real_step(run, lr)
        return (float("nan"), norm, tokens) if run.step == 6 else (loss, norm, tokens)
    monkeypatch.setattr(loop_module, "train_step", diverge_at_step_7)
    checkpoint = tmp_path / "out" / "ckpt.safetensors"
    status = main(["train", "--data", str(corpus), "--out-dir", str(tmp_path / "out"), *TINY, "--max-iters", "9"])
    assert status == 1
    err = capsys.readouterr().err
    assert "non-finite at step 7" in err and "step 5" in err and "--lr" in err and "Traceback" not in err
    assert load_checkpoint(checkpoint).meta["step"] == 5                # the eval at step 5 saved it


def test_patience_stops_after_evaluations_without_improvement(tmp_path, corpus, monkeypatch, capsys):
    val_losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9])
    monkeypatch.setattr(LanguageModelTask, "evaluate", lambda self: {"val_loss": (v := next(val_losses)),
                                                                     "val_perplexity": np.exp(v)})
    status, rows = train(tmp_path, corpus, "out", "--max-iters", "40", "--eval-interval", "2",
                         "--patience", "2")
    assert status == 0
    assert rows[-1]["step"] == 8                       # evals at 2, 4 (best), 6, 8: two without improving
    assert "early stop" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "out" / "best.safetensors").meta["step"] == 4


def test_best_checkpoint_holds_the_lowest_validation_loss(tmp_path, corpus, capsys):
    _, rows = train(tmp_path, corpus, "out", "--max-iters", "20", "--lr", "1e-2")
    evaluated = [r for r in rows if "val_loss" in r]
    best = min(evaluated, key=lambda r: r["val_loss"])
    meta = load_checkpoint(tmp_path / "out" / "best.safetensors").meta
    assert meta["step"] == best["step"] and meta["extra"]["best_val_loss"] == best["val_loss"]
    assert (tmp_path / "out" / "loss.png").stat().st_size > 1000


def test_gradient_accumulation_averages_micro_batches(tmp_path, corpus):
    def run_with(accum, batch_size):
        config = TrainConfig(data=str(corpus), n_layer=1, n_head=2, n_embd=16, block_size=16, dtype="float64",
                             grad_accum=accum, batch_size=batch_size, grad_clip=0.0)
        (tmp_path / f"o{accum}").mkdir()
        return start_run(config, resume=False, out_dir=tmp_path / f"o{accum}")[0]
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 1000, 8)
    data = np.array([ord(c) - ord("a") for c in "abcdefghij" * 120])
    x = data[starts[:, None] + np.arange(16)]
    y = data[starts[:, None] + np.arange(16) + 1]
    one, two = run_with(1, 8), run_with(2, 4)
    one.task.next_batch = lambda rng, batches=iter([(x, y)]): next(batches)
    two.task.next_batch = lambda rng, batches=iter([(x[:4], y[:4]), (x[4:], y[4:])]): next(batches)
    loss_one, _, tokens_one = loop_module.train_step(one, 1e-2)
    loss_two, _, tokens_two = loop_module.train_step(two, 1e-2)
    assert tokens_one == tokens_two == 8 * 16
    assert loss_two == pytest.approx(loss_one, rel=1e-12)
    for name in one.model.params:
        assert_allclose(two.model.params[name], one.model.params[name], rtol=1e-10, atol=1e-12)


def test_a_second_ctrl_c_aborts_at_once_without_a_traceback(tmp_path, corpus, monkeypatch, capsys):
    real_step = loop_module.train_step

    def interrupt_twice(run, lr):
        if run.step == 6:
            signal.raise_signal(signal.SIGINT)   # first: asks the loop to stop after this step...
            signal.raise_signal(signal.SIGINT)   # ...second: the default handler, KeyboardInterrupt now
        return real_step(run, lr)
    monkeypatch.setattr(loop_module, "train_step", interrupt_twice)
    status, _ = train(tmp_path, corpus, "out", "--max-iters", "9")
    assert status == 130
    assert "aborted" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "out").meta["step"] == 5          # the last evaluation's checkpoint
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_samples_fall_back_to_a_newline_when_the_prompt_cannot_be_encoded(tmp_path, corpus, capsys):
    # The pattern corpus has no "T", so the default --sample-prompt "The" cannot be encoded.
    status = main(["train", "--data", str(corpus), "--out-dir", str(tmp_path / "o"), *TINY, "--max-iters", "2",
                   "--samples", "1", "--sample-tokens", "7"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0 and lines[0].startswith("--- sample 1")
    assert len(lines[1]) == 7 and set(lines[1]) <= set("abcdefghij")
