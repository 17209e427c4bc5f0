"""The commands with Llama: ``npllm train --model llama`` from scratch (its flags, defaults and refusals),
``--init-from`` a Llama-family Hugging Face directory (fine-tune, export <out-dir>/hf), and
``npllm generate --checkpoint DIR`` straight from a Hugging Face directory (Llama or GPT-2)."""
import json

import numpy as np
import pytest
from tiny_gpt2 import write_tiny_gpt2
from tiny_llama import write_tiny_llama

from npllm.checkpoint import load_checkpoint
from npllm.commands import main
from npllm.generate import generate
from npllm.models import Llama
from npllm.tokenizers import BPETokenizer

TEXT = "the cat sat on the mat and the dog ate the hat. " * 40


def run(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture()
def text_file(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    return str(tmp_path / "text.txt")


def test_train_model_llama_from_scratch_records_its_architecture(tmp_path, capsys, text_file):
    out = str(tmp_path / "out")
    status, stdout, _ = run(capsys, "train", "--model", "llama", "--data", text_file, "--n-layer", "2", "--n-head", "4",
                            "--n-embd", "32", "--block-size", "16", "--batch-size", "8", "--max-iters", "60",
                            "--eval-interval", "30", "--eval-iters", "2", "--out-dir", out, "--no-progress",
                            "--samples", "0")
    assert status == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    meta = load_checkpoint(summary["checkpoint"]).meta
    assert meta["model_type"] == "llama"
    # Defaults: one key/value head per query head, SwiGLU width 8/3 · 32 = 85.3 rounded up to 96, theta 1e4.
    config = meta["model_config"]
    assert (config["n_kv_head"], config["intermediate_size"], config["rope_theta"]) == (4, 96, 10000.0)
    run_config = meta["extra"]["run"]
    assert (run_config["n_kv_head"], run_config["intermediate_size"], run_config["rope_theta"]) == (4, 96, 10000.0)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert summary["final_val_loss"] < rows[0]["train_loss"] - 0.5
    status, stdout, _ = run(capsys, "generate", "--checkpoint", out, "--prompt", "the ", "--max-new-tokens", "10",
                            "--temperature", "0")
    assert status == 0 and stdout.startswith("the ")
    status, stdout, _ = run(capsys, "train", "--resume", "--out-dir", out, "--max-iters", "70", "--no-progress")
    assert status == 0 and json.loads(stdout.strip().splitlines()[-1])["iters"] == 70
    status, _, err = run(capsys, "train", "--resume", "--out-dir", out, "--max-iters", "80", "--n-kv-head", "2")
    assert status == 2 and "--n-kv-head: the run being resumed was started with --n-kv-head 4" in err


def test_train_llama_flags_are_kept_and_grouped_query_attention_trains(tmp_path, capsys, text_file):
    status, stdout, _ = run(capsys, "train", "--model", "llama", "--data", text_file, "--n-layer", "1", "--n-head", "4",
                            "--n-kv-head", "2", "--intermediate-size", "40", "--rope-theta", "500000",
                            "--n-embd", "16", "--block-size", "8", "--batch-size", "4", "--max-iters", "4",
                            "--eval-interval", "4", "--eval-iters", "1", "--out-dir", str(tmp_path / "out"),
                            "--no-progress", "--samples", "0")
    assert status == 0
    config = load_checkpoint(json.loads(stdout.strip().splitlines()[-1])["checkpoint"]).meta["model_config"]
    assert (config["n_kv_head"], config["intermediate_size"], config["rope_theta"]) == (2, 40, 500000.0)


@pytest.mark.parametrize("flags, words", [
    (["--model", "llama", "--n-head", "4", "--n-kv-head", "3"], "--n-kv-head: must divide --n-head"),
    (["--model", "gpt", "--n-kv-head", "2"], "--n-kv-head: applies to --model llama only"),
    (["--model", "lstm", "--rope-theta", "1e6"], "--rope-theta: applies to --model llama only"),
    (["--model", "llama", "--dropout", "0.1"], "--dropout: Llama has no dropout"),
    (["--model", "llama", "--n-head", "4", "--n-embd", "36"], "--n-embd: --n-embd / --n-head = 9 must be even"),
    (["--model", "llama", "--n-head", "4", "--n-embd", "30"], "--n-embd: must be divisible by --n-head"),
])
def test_llama_flag_mistakes_are_one_line_naming_the_flag(tmp_path, capsys, text_file, flags, words):
    status, _, err = run(capsys, "train", "--data", text_file, "--out-dir", str(tmp_path / "out"), *flags)
    assert status == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_init_from_a_llama_directory_fine_tunes_and_exports_hf(tmp_path, capsys, text_file):
    write_tiny_llama(tmp_path / "llama", "qwen2")
    status, stdout, _ = run(capsys, "train", "--init-from", str(tmp_path / "llama"), "--data", text_file,
                            "--block-size", "16", "--batch-size", "8", "--lr", "3e-3", "--max-iters", "40",
                            "--eval-interval", "20", "--eval-iters", "2", "--out-dir", str(tmp_path / "out"),
                            "--no-progress", "--samples", "0")
    assert status == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert summary["final_train_loss"] < rows[0]["train_loss"] - 1.0
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert checkpoint.meta["model_type"] == "llama" and checkpoint.meta["extra"]["run"]["model"] == "llama"
    assert checkpoint.meta["model_config"]["attention_bias"] is True                 # Qwen2's biases kept
    hf = tmp_path / "out" / "hf"
    assert summary["hf"] == str(hf) and (hf / "tokenizer.json").is_file()
    reloaded = Llama.from_pretrained(hf)
    assert all(np.array_equal(value, checkpoint.params[name]) for name, value in reloaded.params.items())
    original, exported = BPETokenizer.from_pretrained(tmp_path / "llama"), BPETokenizer.from_pretrained(hf)
    assert exported.encode(TEXT[:60]) == original.encode(TEXT[:60])


def test_init_from_a_llama_directory_refuses_contradicting_flags(tmp_path, capsys, text_file):
    write_tiny_llama(tmp_path / "llama")
    status, _, err = run(capsys, "train", "--init-from", str(tmp_path / "llama"), "--data", text_file,
                         "--n-layer", "3", "--out-dir", str(tmp_path / "out"))
    assert status == 2 and "--n-layer: --init-from" in err and "llama model with n_layer = 2" in err
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"architectures": ["GemmaForCausalLM"],
                                                                  "model_type": "gemma"}))
    status, _, err = run(capsys, "train", "--init-from", str(tmp_path / "llama"), "--data", text_file,
                         "--out-dir", str(tmp_path / "out"))
    assert status == 2 and "unsupported model_type 'gemma'" in err


def test_generate_from_a_llama_directory_starts_from_the_templates_begin_token(tmp_path, capsys):
    write_tiny_llama(tmp_path / "llama")
    document = json.loads((tmp_path / "llama" / "tokenizer.json").read_text(encoding="utf-8"))
    document["post_processor"] = {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}
    (tmp_path / "llama" / "tokenizer.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    status, stdout, _ = run(capsys, "generate", "--checkpoint", str(tmp_path / "llama"), "--prompt", "the an",
                            "--max-new-tokens", "8", "--temperature", "0")
    assert status == 0
    model, tokenizer = Llama.from_pretrained(tmp_path / "llama"), BPETokenizer.from_pretrained(tmp_path / "llama")
    prompt = [262] + tokenizer.encode("the an")                                        # <|begin_of_text|> first
    expected = generate(model, np.array([prompt]), 8, temperature=0)[0, 1:]
    assert stdout.rstrip("\n") == tokenizer.decode(expected.tolist())


def test_generate_from_a_gpt2_directory_with_vocab_and_merges(tmp_path, capsys):
    write_tiny_gpt2(tmp_path / "gpt2")
    status, stdout, err = run(capsys, "generate", "--checkpoint", str(tmp_path / "gpt2"), "--prompt", "the",
                              "--max-new-tokens", "5", "--seed", "1")
    assert status == 0 and stdout.startswith("the") and "tokens/s" in err
    (tmp_path / "gpt2" / "merges.txt").unlink()
    status, _, err = run(capsys, "generate", "--checkpoint", str(tmp_path / "gpt2"))
    assert status == 2 and "--checkpoint" in err and "merges.txt" in err
