"""``npllm train --init-from``: fine-tune a tiny random GPT-2 directory end to end — the loss falls, the
architecture and tokenizer are kept, contradicting flags are refused, and <out-dir>/hf loads back."""
import json

import numpy as np
import pytest
from safetensors import safe_open
from tiny_gpt2 import write_tiny_gpt2

from npllm.checkpoint import load_checkpoint
from npllm.commands import main
from npllm.models import GPT
from npllm.tokenizers import BPETokenizer

TEXT = "the cat sat on the mat and the dog ate the hat. " * 40


@pytest.fixture()
def gpt2_dir(tmp_path):
    write_tiny_gpt2(tmp_path / "gpt2", n_embd=16, n_layer=2, n_head=2, n_positions=32)
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path / "gpt2"


def _train(tmp_path, capsys, gpt2_dir, *flags):
    status = main(["train", "--init-from", str(gpt2_dir), "--data", str(tmp_path / "text.txt"),
                   "--out-dir", str(tmp_path / "out"), "--no-progress", "--samples", "0", *flags])
    out = capsys.readouterr()
    return status, out.out.strip().splitlines(), out.err


def test_finetuning_a_gpt2_directory_lowers_the_loss_and_exports_hf(tmp_path, capsys, gpt2_dir):
    status, lines, _ = _train(tmp_path, capsys, gpt2_dir, "--max-iters", "80", "--block-size", "16",
                              "--batch-size", "8", "--lr", "3e-3", "--eval-interval", "40", "--eval-iters", "4")
    assert status == 0
    summary = json.loads(lines[-1])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_loss"] > 5.0                       # ≈ ln(263): the random tiny model knows nothing
    assert summary["final_train_loss"] < rows[0]["train_loss"] - 2.0
    # The fine-tuned model kept GPT-2's architecture and vocabulary.
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert checkpoint.meta["model_config"]["n_layer"] == 2 and checkpoint.meta["tokenizer"]["type"] == "bpe"
    # <out-dir>/hf is a GPT-2 directory holding exactly the fine-tuned weights and the tokenizer.
    hf = tmp_path / "out" / "hf"
    assert summary["hf"] == str(hf)
    with safe_open(hf / "model.safetensors", framework="numpy") as handle:
        assert handle.metadata() == {"format": "pt"}
    reloaded = GPT.from_pretrained(hf)
    for name, value in reloaded.params.items():
        assert np.array_equal(value, checkpoint.params[name]), name
    original, tokenizer = BPETokenizer.from_pretrained(gpt2_dir), BPETokenizer.from_pretrained(hf)
    assert tokenizer.encode(TEXT[:60]) == original.encode(TEXT[:60])


@pytest.mark.parametrize("flags, words", [
    (["--n-layer", "3"], "--n-layer: --init-from"),
    (["--n-embd", "32"], "n_embd = 16"),
    (["--model", "lstm"], "--model: --init-from"),
    (["--tokenizer", "word"], "--tokenizer"),
    (["--block-size", "64"], "--block-size: must be <= the model's block_size 32"),
])
def test_flags_that_contradict_the_loaded_model_are_refused(tmp_path, capsys, gpt2_dir, flags, words):
    status, _, err = _train(tmp_path, capsys, gpt2_dir, "--max-iters", "1", *flags)
    assert status == 2 and words in err


def test_init_from_a_broken_directory_is_a_usage_error(tmp_path, capsys, gpt2_dir):
    (gpt2_dir / "model.safetensors").unlink()
    status, _, err = _train(tmp_path, capsys, gpt2_dir, "--max-iters", "1")
    assert status == 2 and "--init-from" in err and "no model.safetensors" in err
