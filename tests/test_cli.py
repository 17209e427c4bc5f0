"""The command line end to end: train → generate → eval, and every user mistake as one line + exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npllm.commands import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--eval-interval", "10", "--no-progress"]
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 20-step GPT trained once for this module: (out_dir, corpus path)."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "hamlet.txt"
    corpus.write_text(TEXT)
    out = root / "out"
    assert main(["train", "--data", str(corpus), "--out-dir", str(out), *TINY, "--max-iters", "20",
                 "--samples", "1", "--sample-tokens", "30"]) == 0
    return out, corpus


def run_error(capsys, argv):
    """Run the CLI, expect exit status 2 and no traceback; return the error line (stderr's last)."""
    try:
        status, from_argparse = main(argv), False
    except SystemExit as exc:        # argparse's range/choice checks: usage line + one error line, exit 2
        status, from_argparse = exc.code, True
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    if not from_argparse:
        assert len(err) == 1, err    # exactly one line
    return err[-1]


def test_train_prints_samples_and_a_final_json_line(trained, capsys):
    out, _ = trained
    for name in ("ckpt.safetensors", "best.safetensors", "metrics.jsonl", "loss.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert {"val_loss", "val_perplexity", "tokens_per_second", "lr"} <= set(rows[9])


def test_train_final_line_has_the_documented_keys(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    assert main(["train", "--data", str(corpus), "--out-dir", str(tmp_path / "o"), *TINY, "--max-iters", "3",
                 "--samples", "1", "--sample-tokens", "10"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("--- sample 1")
    summary = json.loads(out[-1])
    assert {"final_train_loss", "final_val_loss", "val_perplexity", "tokens_per_second", "seconds", "iters",
            "checkpoint"} <= set(summary)
    assert summary["iters"] == 3 and summary["tokens_per_second"] > 0
    assert summary["val_perplexity"] == pytest.approx(2.718281828 ** summary["final_val_loss"])


def test_generate_samples_text_from_the_checkpoint(trained, capsys):
    out, _ = trained
    assert main(["generate", "--checkpoint", str(out), "--prompt", "To be", "--max-new-tokens", "25",
                 "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("To be") and len(text.rstrip("\n")) == 5 + 25
    assert set(text) <= set(TEXT)


def test_generate_is_reproducible_and_greedy_ignores_the_seed(trained, capsys):
    out, _ = trained
    argv = ["generate", "--checkpoint", str(out / "best.safetensors"), "--max-new-tokens", "20"]
    outputs = []
    for extra in (["--seed", "1"], ["--seed", "1"], ["--temperature", "0", "--seed", "1"],
                  ["--temperature", "0", "--seed", "2", "--no-kv-cache"]):
        assert main(argv + extra) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert outputs[2] == outputs[3]


def test_eval_reports_loss_on_the_validation_split_and_on_a_file(trained, capsys):
    out, corpus = trained
    assert main(["eval", "--checkpoint", str(out)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "validation split" in captured.err and result["loss"] > 0 and result["tokens"] > 0
    assert main(["eval", "--checkpoint", str(out), "--data", str(corpus)]) == 0
    on_file = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_file["tokens"] > result["tokens"]          # the whole file, not its last 10%


def test_console_entry_point_runs_in_a_fresh_process(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kernels")])}
    done = subprocess.run([sys.executable, "-m", "npllm.commands", "train", "--data", str(corpus), "--out-dir",
                           str(tmp_path / "o"), *TINY, "--max-iters", "2", "--samples", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["iters"] == 2


def test_info_lists_versions_backends_and_the_kernel_cache(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in ("numpy:", "numba:", "backend selected:", "kernel cache:", "BLAS:"):
        assert needle in out


def corrupt(path: Path, tmp_path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[-5] ^= 0xFF                      # a weight byte: only the checksum notices
    else:
        data = data[: len(data) // 2]         # truncated mid-tensor
    bad = tmp_path / f"{how}.safetensors"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("how, message", [("flip", "checksum"), ("truncate", "truncated")])
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_corrupt_checkpoints_are_one_line_errors(trained, tmp_path, capsys, how, message, command):
    out, _ = trained
    bad = corrupt(out / "ckpt.safetensors", tmp_path, how)
    line = run_error(capsys, [command, "--checkpoint", str(bad)])
    assert "--checkpoint" in line and message in line


def test_resume_from_a_corrupt_checkpoint_is_a_one_line_error(trained, tmp_path, capsys):
    out, _ = trained
    (tmp_path / "run").mkdir()
    corrupt(out / "ckpt.safetensors", tmp_path, "flip").rename(tmp_path / "run" / "ckpt.safetensors")
    line = run_error(capsys, ["train", "--out-dir", str(tmp_path / "run"), "--resume", "--max-iters", "50"])
    assert "--resume" in line and "checksum" in line


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


CASES = [
    ("missing data file", lambda p: ["--data", str(p / "nope.txt")], "--data", "does not exist"),
    ("empty data file", lambda p: ["--data", _write(p, "e.txt", b"")], "--data", "empty"),
    ("binary data file", lambda p: ["--data", _write(p, "b.bin", b"\x00\x01\x02" * 100)], "--data", "UTF-8"),
    ("corpus shorter than a block", lambda p: ["--data", _write(p, "s.txt", b"tiny text " * 3)], "--data",
     "shorter than one block"),
    ("n_embd not divisible", lambda p: ["--n-embd", "30", "--n-head", "4"], "--n-embd", "divisible"),
    ("too many recurrent layers", lambda p: ["--model", "lstm", "--n-layer", "3"], "--n-layer", "1 or 2"),
    ("min_lr above lr", lambda p: ["--lr", "1e-3", "--min-lr", "1e-2"], "--min-lr", "<= --lr"),
    ("warmup beyond decay", lambda p: ["--warmup-iters", "500", "--lr-decay-iters", "100"], "--warmup-iters",
     "<="),
    ("resume without checkpoint", lambda p: ["--resume", "--out-dir", str(p / "empty")], "--resume",
     "no checkpoint"),
    ("zero learning rate", lambda p: ["--lr", "0"], "--lr", "must be > 0"),
    ("negative learning rate", lambda p: ["--lr", "-1"], "--lr", "must be > 0"),
    ("unknown backend", lambda p: ["--backend", "bogus"], "--backend", "invalid choice"),
]


@pytest.mark.parametrize("argv, flag, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_train_mistakes_are_one_line_errors_naming_the_flag(tmp_path, capsys, argv, flag, message):
    line = run_error(capsys, ["train", "--out-dir", str(tmp_path / "o"), *TINY, *argv(tmp_path)])
    assert flag in line and message in line


def test_a_bad_backend_variable_is_an_error_naming_the_variable(tmp_path, capsys, monkeypatch):
    import npllm.backend as backend
    monkeypatch.setattr(backend, "_current", None)
    monkeypatch.setenv("NPLLM_BACKEND", "fortran")
    line = run_error(capsys, ["train", "--out-dir", str(tmp_path / "o"), *TINY])
    assert line.startswith("npllm train: error: NPLLM_BACKEND:") and "--backend" not in line


@pytest.mark.parametrize("argv, flag, message", [
    (["--top-p", "0"], "--top-p", "must be >"),
    (["--top-p", "1.5"], "--top-p", "must be <="),
    (["--max-new-tokens", "-1"], "--max-new-tokens", "must be >="),
    (["--prompt", "日本"], "--prompt", "not in this tokenizer's vocabulary"),
])
def test_generate_mistakes_are_one_line_errors_naming_the_flag(trained, capsys, argv, flag, message):
    out, _ = trained
    line = run_error(capsys, ["generate", "--checkpoint", str(out), *argv])
    assert flag in line and message in line


def test_generate_with_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    line = run_error(capsys, ["generate", "--checkpoint", str(tmp_path / "missing.safetensors")])
    assert "--checkpoint" in line and "not found" in line


def test_a_reader_that_leaves_early_gets_no_traceback():
    done = subprocess.run(f"{sys.executable} -m npllm.commands info | head -1", shell=True, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT), str(ROOT / "kernels")])})
    assert done.stdout.startswith("npllm ") and "Traceback" not in done.stderr
