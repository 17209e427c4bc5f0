"""A run remembers itself, resumes exactly, and fails safely: flags, --resume, --init-from and the out-dir.

Every model goes through one loop (npllm.training.loop), so the seq2seq run gets what the language models
get: periodic checkpoints, Ctrl-C saves, non-finite stops, --resume, metrics.jsonl and loss.png.
"""
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import npllm.training.loop as loop_module
from npllm.checkpoint import load_checkpoint
from npllm.commands import main
from npllm.training import TrainConfig
from npllm.training.config import EXTENDABLE, merge_resumed, resolve
from npllm.training.outdir import LOCK_NAME, OutDirLock

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--eval-iters", "2",
        "--no-progress", "--samples", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "pattern.txt"
    path.write_text("abcdefghij" * 120)
    return path


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.tsv"
    rng = np.random.default_rng(0)
    lines = ["".join(rng.choice(list("abcde"), size=rng.integers(2, 6))) for _ in range(200)]
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in lines), encoding="utf-8")
    return path


def rows_of(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def train(out_dir, *flags):
    return main(["train", "--out-dir", str(out_dir), *flags])


def interrupt_at(monkeypatch, step):
    """Make the loop see a Ctrl-C during step ``step`` (1-based), as a real SIGINT would arrive."""
    real_step = loop_module.train_step

    def step_then_interrupt(run, lr):
        result = real_step(run, lr)
        if run.step == step - 1:
            signal.raise_signal(signal.SIGINT)
        return result
    monkeypatch.setattr(loop_module, "train_step", step_then_interrupt)
    return real_step


# --------------------------------------------------------------------------------------- a run remembers itself
def test_resume_restores_every_recorded_flag_the_readme_example(tmp_path, corpus, capsys):
    flags = ["--data", str(corpus), *TINY, "--lr", "1e-4", "--batch-size", "4", "--lr-decay-iters", "12",
             "--eval-interval", "4"]
    assert train(tmp_path / "whole", *flags, "--max-iters", "12") == 0
    assert train(tmp_path / "split", *flags, "--max-iters", "8") == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--max-iters", "12", "--out-dir", str(tmp_path / "split")]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "--max-iters 8 → 12" in err          # the one change, echoed in one line
    whole, split = rows_of(tmp_path / "whole"), rows_of(tmp_path / "split")
    assert split[8]["lr"] == pytest.approx(3.6306e-5, rel=1e-4)          # step 9: lr 1e-4's cosine, not 3e-3's
    assert [r["train_loss"] for r in split] == [r["train_loss"] for r in whole]


def test_gpt_with_non_default_flags_interrupted_and_resumed_equals_the_uninterrupted_run(tmp_path, corpus,
                                                                                         monkeypatch, capsys):
    flags = ["--data", str(corpus), *TINY, "--lr", "2e-3", "--batch-size", "3", "--dropout", "0.1",
             "--grad-accum", "2", "--weight-decay", "0.05", "--warmup-iters", "2", "--eval-interval", "3",
             "--max-iters", "10", "--seed", "7"]
    assert train(tmp_path / "whole", *flags) == 0
    whole = json.loads(capsys.readouterr().out.splitlines()[-1])
    real_step = interrupt_at(monkeypatch, 5)
    assert train(tmp_path / "split", *flags) == 130
    assert load_checkpoint(tmp_path / "split").meta["step"] == 5
    monkeypatch.setattr(loop_module, "train_step", real_step)
    capsys.readouterr()
    assert main(["train", "--resume", "--max-iters", "10", "--out-dir", str(tmp_path / "split")]) == 0
    resumed = json.loads(capsys.readouterr().out.splitlines()[-1])
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "iters"):
        assert resumed[key] == whole[key]
    for key in ("train_loss", "lr", "val_loss"):
        assert [r.get(key) for r in rows_of(tmp_path / "split")] == [r.get(key) for r in rows_of(tmp_path / "whole")]


@pytest.mark.parametrize("flag, value", [("--model", "gru"), ("--n-layer", "2"), ("--tokenizer", "word"),
                                         ("--lr", "0.1"), ("--batch-size", "8"), ("--seed", "3"),
                                         ("--dtype", "float64"), ("--model", "gpt")])
def test_resume_refuses_a_typed_flag_that_contradicts_the_run(tmp_path, corpus, capsys, flag, value):
    model = "gpt" if flag != "--model" or value != "gpt" else "lstm"     # --model gpt typed on an lstm run
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--model", model, "--hidden-size", "16",
                 "--max-iters", "2") == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--max-iters", "4", "--out-dir", str(tmp_path / "o"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"npllm train: error: {flag}:") and "\n" not in err
    assert load_checkpoint(tmp_path / "o").meta["step"] == 2             # nothing changed


def test_resume_accepts_typed_flags_equal_to_the_recorded_ones_and_extends_the_rest(tmp_path, corpus, capsys):
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2", "--eval-interval", "2") == 0
    assert main(["train", "--resume", "--out-dir", str(tmp_path / "o"), "--data", str(corpus), *TINY,
                 "--max-iters", "4", "--eval-interval", "1", "--patience", "5"]) == 0
    assert [r["step"] for r in rows_of(tmp_path / "o") if "val_loss" in r] == [2, 3, 4]
    recorded = load_checkpoint(tmp_path / "o").meta["extra"]["run"]
    assert recorded["max_iters"] == 4 and recorded["patience"] == 5 and recorded["n_embd"] == 16


def test_resume_refuses_data_with_other_content_but_not_the_same_text_elsewhere(tmp_path, corpus, capsys):
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 0
    other = tmp_path / "other.txt"
    other.write_text("zyxwvutsrq" * 120)
    assert main(["train", "--resume", "--max-iters", "4", "--out-dir", str(tmp_path / "o"), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "zyxw" not in err                          # content never echoed
    copy = tmp_path / "copy.txt"
    copy.write_text(corpus.read_text())
    assert main(["train", "--resume", "--max-iters", "4", "--out-dir", str(tmp_path / "o"), "--data", str(copy)]) == 0


def test_merge_lets_only_extendable_fields_change():
    recorded = resolve(TrainConfig(model="lstm"))
    for name in EXTENDABLE:
        value = {"backend": "numba", "out_dir": "elsewhere", "sample_prompt": "x", "no_progress": True}.get(name, 3)
        merged, changes = merge_resumed(recorded, TrainConfig(**{name: value}))
        assert getattr(merged, name) == value and len(changes) == (value != getattr(recorded, name))
    with pytest.raises(Exception, match="--hidden-size"):
        merge_resumed(recorded, TrainConfig(hidden_size=recorded.hidden_size + 1))


def test_init_from_refuses_a_typed_model_flag_even_with_the_default_value(tmp_path, corpus, capsys):
    assert train(tmp_path / "lstm", "--data", str(corpus), *TINY, "--model", "lstm", "--hidden-size", "16",
                 "--max-iters", "2") == 0
    capsys.readouterr()
    status = train(tmp_path / "ft", "--data", str(corpus), *TINY[6:], "--init-from", str(tmp_path / "lstm"),
                   "--model", "gpt", "--max-iters", "2")
    err = capsys.readouterr().err
    assert status == 2 and "--model: --init-from" in err and "lstm" in err
    assert train(tmp_path / "ft", "--data", str(corpus), *TINY[6:], "--init-from", str(tmp_path / "lstm"),
                 "--max-iters", "2") == 0
    assert load_checkpoint(tmp_path / "ft").meta["extra"]["run"]["model"] == "lstm"


def test_init_from_a_directory_without_config_json_says_so(tmp_path, corpus, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"\0" * 16)
    assert train(tmp_path / "o", "--data", str(corpus), "--init-from", str(tmp_path / "hf")) == 2
    assert "config.json" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- seq2seq, same loop
def test_seq2seq_ctrl_c_saves_and_resume_gives_the_uninterrupted_numbers(tmp_path, pairs, monkeypatch, capsys):
    flags = ["--model", "seq2seq", "--data", str(pairs), "--hidden-size", "16", "--n-embd", "8", "--batch-size",
             "16", "--max-iters", "12", "--eval-interval", "4", "--no-progress", "--samples", "0", "--seed", "0"]
    assert train(tmp_path / "whole", *flags) == 0
    whole = json.loads(capsys.readouterr().out.splitlines()[-1])
    for name in ("ckpt.safetensors", "best.safetensors", "metrics.jsonl", "loss.png"):
        assert (tmp_path / "whole" / name).is_file()
    real_step = interrupt_at(monkeypatch, 6)
    assert train(tmp_path / "split", *flags) == 130
    assert "interrupted at step 6" in capsys.readouterr().err
    monkeypatch.setattr(loop_module, "train_step", real_step)
    assert main(["train", "--resume", "--max-iters", "12", "--out-dir", str(tmp_path / "split")]) == 0
    resumed = json.loads(capsys.readouterr().out.splitlines()[-1])
    for key in ("final_train_loss", "final_val_loss", "exact_match", "char_accuracy", "bleu"):
        assert resumed[key] == whole[key]


def test_seq2seq_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, pairs, monkeypatch, capsys):
    real_step = loop_module.train_step

    def diverge(run, lr):
        loss, norm, tokens = real_step(run, lr)
        return (float("inf"), norm, tokens) if run.step == 5 else (loss, norm, tokens)
    monkeypatch.setattr(loop_module, "train_step", diverge)
    status = train(tmp_path / "o", "--model", "seq2seq", "--data", str(pairs), "--hidden-size", "8", "--n-embd", "4",
                   "--max-iters", "9", "--eval-interval", "4", "--no-progress")
    err = capsys.readouterr().err
    assert status == 1 and "non-finite at step 6" in err and "step 4" in err
    assert load_checkpoint(tmp_path / "o").meta["step"] == 4


def test_divergence_before_any_checkpoint_does_not_claim_one(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setattr(loop_module, "train_step", lambda run, lr: (float("nan"), float("nan"), 0))
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "3") == 1
    err = capsys.readouterr().err
    assert "no checkpoint was written" in err and not (tmp_path / "o" / "ckpt.safetensors").exists()


# --------------------------------------------------------------------------------------- the out-dir
def test_a_second_run_on_a_live_out_dir_is_refused(tmp_path, corpus, capsys):
    (tmp_path / "o").mkdir()
    with OutDirLock(tmp_path / "o"):
        assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 2
    assert "in use by another training run" in capsys.readouterr().err
    assert not (tmp_path / "o" / LOCK_NAME).exists()                       # released on exit
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 0


def test_a_lock_left_by_a_killed_run_is_stale(tmp_path, corpus):
    (tmp_path / "o").mkdir()
    code = (f"import os, fcntl; f = open({str(tmp_path / 'o' / LOCK_NAME)!r}, 'w'); "
            "fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush(); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], timeout=60)
    assert (tmp_path / "o" / LOCK_NAME).exists()
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 0


def test_a_fresh_run_into_an_out_dir_with_a_checkpoint_needs_resume_or_overwrite(tmp_path, corpus, capsys):
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 0
    capsys.readouterr()
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "3") == 2
    assert "--resume" in capsys.readouterr().err and load_checkpoint(tmp_path / "o").meta["step"] == 2
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "3", "--overwrite") == 0
    assert load_checkpoint(tmp_path / "o").meta["step"] == 3 and rows_of(tmp_path / "o")[0]["step"] == 1


def test_temp_files_of_a_killed_write_are_removed(tmp_path, corpus):
    (tmp_path / "o").mkdir()
    leftover = tmp_path / "o" / ".ckpt.safetensors.abcd1234.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 0
    assert not leftover.exists()


def test_a_failed_write_is_one_line_naming_the_intact_checkpoint(tmp_path, corpus, monkeypatch, capsys):
    import npllm.training.run as run_module
    real_save = run_module.save_checkpoint
    calls = []

    def full_disk_on_the_second_eval(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:                                       # ckpt + best at step 2 succeed, then ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(path, *args, **kwargs)
    monkeypatch.setattr(run_module, "save_checkpoint", full_disk_on_the_second_eval)
    status = train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "6", "--eval-interval", "2")
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert "No space left on device" in err and "step 2" in err and "intact" in err
    assert load_checkpoint(tmp_path / "o").meta["step"] == 2


def test_an_out_dir_that_is_a_file_is_a_usage_error(tmp_path, corpus, capsys):
    (tmp_path / "file").write_text("x")
    assert train(tmp_path / "file", "--data", str(corpus), *TINY) == 2
    assert "--out-dir" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- one-line mistakes
def test_a_data_symlink_loop_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert train(tmp_path / "o", "--data", str(tmp_path / "a")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("npllm train: error: --data:") and "\n" not in err


@pytest.mark.parametrize("argv, flag", [
    (["train", "--lr", "inf"], "--lr"), (["train", "--weight-decay", "inf"], "--weight-decay"),
    (["train", "--seed", "-1"], "--seed"), (["train", "--lr", "nan"], "--lr"),
    (["train", "--n-embd", "1000000000000"], "--n-embd"), (["train", "--block-size", "1000000000000"], "--block-size"),
    (["train", "--n-embd", "40000", "--n-head", "4"], "--n-embd"),
    (["train", "--block-size", "500000", "--batch-size", "16"], "--block-size"),
    (["generate", "--checkpoint", "x", "--temperature", "inf"], "--temperature"),
    (["generate", "--checkpoint", "x", "--max-new-tokens", "1000000000000"], "--max-new-tokens"),
    (["train", "--data", "/dev/zero"], "--data"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exited:        # argparse's own checks exit; ours return 2
        sys.exit(main([*argv, *(["--out-dir", str(tmp_path / "o")] if argv[0] == "train" else [])]))
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and flag in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()              # refused before anything was created


# --------------------------------------------------------------------------------------- broken inputs, one line
def _gpt2_dir(tmp_path):
    from tiny_gpt2 import write_tiny_gpt2
    path = tmp_path / "gpt2"
    write_tiny_gpt2(path)
    return path


@pytest.mark.parametrize("breakage, words", [
    (lambda d: (d / "vocab.json").write_text('["a", "b"]'), "vocab.json"),
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                          "n_layer": "twelve"})), "n_layer"),
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                          "n_layer": 100000})), "n_layer"),
    (lambda d: (d / "config.json").unlink(), "config.json"),
])
def test_init_from_a_broken_gpt2_directory_is_one_line_and_exit_2(tmp_path, corpus, capsys, breakage, words):
    directory = _gpt2_dir(tmp_path)
    breakage(directory)
    assert train(tmp_path / "o", "--data", str(corpus), "--init-from", str(directory), "--block-size", "16",
                 "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("npllm train: error: --init-from:") and words in err and "\n" not in err


def test_init_from_non_float_weights_is_refused(tmp_path, corpus, capsys):
    from safetensors.numpy import load_file, save_file
    directory = _gpt2_dir(tmp_path)
    tensors = load_file(directory / "model.safetensors")
    tensors = {name: np.asarray(array * 100).astype(np.int32) for name, array in tensors.items()}
    save_file(tensors, directory / "model.safetensors")
    assert train(tmp_path / "o", "--data", str(corpus), "--init-from", str(directory), "--block-size", "16") == 2
    assert "--init-from" in capsys.readouterr().err


def test_a_checkpoint_whose_metadata_was_edited_is_refused(tmp_path, corpus, capsys):
    assert train(tmp_path / "o", "--data", str(corpus), *TINY, "--max-iters", "2") == 0
    path = tmp_path / "o" / "ckpt.safetensors"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'\\"step\\": 2', b'\\"step\\": 5', 1))
    capsys.readouterr()
    assert main(["train", "--resume", "--max-iters", "9", "--out-dir", str(tmp_path / "o")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(path)]) == 2
