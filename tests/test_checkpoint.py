"""Specification of npllm.checkpoint: exact round trips, atomic writes, and loud failures on bad files."""
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import npllm.checkpoint as checkpoint
from npllm.checkpoint import (BEST_NAME, LATEST_NAME, Checkpoint, check_params_match, load_checkpoint,
                              restore_rng, rng_state, save_checkpoint)
from npllm.errors import CheckpointError
from npllm.optim import AdamW


def make_params(dtype=np.float32):
    rng = np.random.default_rng(0)
    return {"wte.weight": rng.standard_normal((5, 4)).astype(dtype),
            "h.0.ln_1.weight": np.ones(4, dtype=dtype),
            "h.0.attn.c_attn.weight": rng.standard_normal((4, 12)).astype(dtype),
            "h.0.attn.c_attn.bias": np.zeros(12, dtype=dtype)}


def make_meta(rng=None):
    return {"model_type": "gpt", "model_config": {"vocab_size": 5, "n_embd": 4}, "tokenizer": {"type": "char"},
            "optimizer": {"type": "AdamW", "step": 3}, "step": 3,
            "rng_state": rng_state(rng or np.random.default_rng(7)), "extra": {"best_val_loss": 1.25}}


def save_sample(path, **kwargs):
    optimizer_arrays = {"m.wte.weight": np.full((5, 4), 0.5, np.float32), "counts": np.arange(3, dtype=np.int64)}
    return save_checkpoint(path, make_params(), optimizer_arrays=optimizer_arrays, meta=make_meta(), **kwargs)


def tensor_data_offset(path):
    """Where the raw tensor bytes start: after the 8-byte header length and the JSON header."""
    (header_len,) = struct.unpack("<Q", Path(path).read_bytes()[:8])
    return 8 + header_len


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    params = make_params(dtype)
    optimizer_arrays = {"m.wte.weight": np.full((5, 4), 0.5, dtype), "step_per_param": np.arange(3, dtype=np.int64)}
    meta = make_meta()
    path = save_checkpoint(tmp_path / "ckpt.safetensors", params, optimizer_arrays=optimizer_arrays, meta=meta)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint)
    assert set(loaded.params) == set(params)
    for name, array in params.items():
        assert loaded.params[name].dtype == array.dtype
        assert_array_equal(loaded.params[name], array)
    for name, array in optimizer_arrays.items():
        assert loaded.optimizer_arrays[name].dtype == array.dtype
        assert_array_equal(loaded.optimizer_arrays[name], array)
    for key, value in meta.items():
        assert loaded.meta[key] == value
    assert loaded.meta["format_version"] == 2
    assert len(loaded.meta["checksum"]) == 64


def test_loaded_params_are_writable_so_an_optimizer_can_update_them(tmp_path):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", make_params()))
    loaded.params["wte.weight"] += 1.0


def test_rng_state_round_trip_continues_the_same_stream(tmp_path):
    rng = np.random.default_rng(42)
    rng.random(10)
    save_checkpoint(tmp_path / "c.safetensors", make_params(), meta={"rng_state": rng_state(rng)})
    resumed = restore_rng(load_checkpoint(tmp_path / "c.safetensors").meta["rng_state"])
    assert_array_equal(resumed.random(5), rng.random(5))


def test_optimizer_state_survives_a_checkpoint_bit_identically(tmp_path):
    params, grads = make_params(), {k: np.full_like(v, 0.1) for k, v in make_params().items()}
    opt = AdamW(1e-2)
    opt.step(params, grads)
    arrays, scalars = opt.state_dict()
    save_checkpoint(tmp_path / "c.safetensors", params, optimizer_arrays=arrays, meta={"optimizer": scalars})
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    resumed = AdamW(1e-2)
    resumed.load_state_dict(loaded.optimizer_arrays, loaded.meta["optimizer"], params=loaded.params)
    opt.step(params, grads)
    resumed.step(loaded.params, grads)
    for name in params:
        assert_array_equal(loaded.params[name], params[name])


def test_directory_path_reads_the_latest_checkpoint(tmp_path):
    save_sample(tmp_path / "out" / LATEST_NAME)   # parent directories are created
    save_checkpoint(tmp_path / "out" / BEST_NAME, {"x": np.zeros(1)})
    assert set(load_checkpoint(tmp_path / "out").params) == set(make_params())
    with pytest.raises(CheckpointError, match=f"no {LATEST_NAME} in directory"):
        load_checkpoint(tmp_path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    save_sample(tmp_path / LATEST_NAME)
    save_sample(tmp_path / LATEST_NAME)   # overwriting goes through a temporary file too
    assert sorted(os.listdir(tmp_path)) == [LATEST_NAME]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_sample(tmp_path / LATEST_NAME)
    original = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"other": np.zeros(3)})
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == [LATEST_NAME]
    monkeypatch.undo()
    assert set(load_checkpoint(path).params) == set(make_params())


def test_unserialisable_meta_fails_before_touching_the_file(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    original = path.read_bytes()
    with pytest.raises(TypeError, match="meta: must be JSON-serialisable"):
        save_checkpoint(path, make_params(), meta={"extra": {"rng": np.random.default_rng(0)}})
    with pytest.raises(ValueError, match="meta: unknown keys \\['lr'\\]"):
        save_checkpoint(path, make_params(), meta={"lr": 0.1})
    assert path.read_bytes() == original


def test_corrupted_tensor_byte_is_a_checksum_error(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    data = bytearray(path.read_bytes())
    data[tensor_data_offset(path) + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch: file is corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 100, -3])
def test_truncated_file_is_a_checkpoint_error(tmp_path, keep):
    path = save_sample(tmp_path / LATEST_NAME)
    data = path.read_bytes()
    path.write_bytes(data[:keep])   # keep < 0 cuts the last bytes of tensor data
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_garbage_and_missing_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all, just some text" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def rewrite_meta(path, edit):
    """Rewrite the npllm metadata JSON of a saved file (keeping the tensors), via safetensors itself."""
    from safetensors import safe_open
    from safetensors.numpy import load, save
    data = Path(path).read_bytes()
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata()
    metadata["npllm"] = edit(metadata["npllm"])
    Path(path).write_bytes(save(load(data), metadata=metadata))


def test_unknown_format_version_is_rejected(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    rewrite_meta(path, lambda text: json.dumps({**json.loads(text), "format_version": 99}))
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        load_checkpoint(path)


def test_bad_metadata_json_and_foreign_safetensors_are_rejected(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    rewrite_meta(path, lambda text: text[:-5])
    with pytest.raises(CheckpointError, match="bad JSON"):
        load_checkpoint(path)
    from safetensors.numpy import save
    foreign = tmp_path / "model.safetensors"
    foreign.write_bytes(save({"wte.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match="not an npllm checkpoint"):
        load_checkpoint(foreign)


def test_check_params_match_accepts_identical_layout():
    check_params_match(make_params(), make_params())


def test_check_params_match_names_missing_unexpected_and_mismatched():
    expected = make_params()
    loaded = dict(make_params())
    del loaded["wte.weight"]
    loaded["lm_head.weight"] = np.zeros((4, 5), np.float32)
    loaded["h.0.attn.c_attn.weight"] = np.zeros((4, 9), np.float32)
    loaded["h.0.ln_1.weight"] = np.ones(4, np.float64)
    with pytest.raises(CheckpointError) as info:
        check_params_match(loaded, expected)
    message = str(info.value)
    assert "missing 1: wte.weight" in message
    assert "unexpected 1: lm_head.weight" in message
    assert "h.0.attn.c_attn.weight: checkpoint float32(4, 9), model float32(4, 12)" in message
    assert "h.0.ln_1.weight: checkpoint float64(4,), model float32(4,)" in message


def test_check_params_match_lists_only_the_first_few():
    expected = {f"p{i}": np.zeros(1) for i in range(20)}
    with pytest.raises(CheckpointError, match=r"missing 20: p0, p1, p10, p11, p12 \(\+15 more\)"):
        check_params_match({}, expected)


def test_no_pickle_anywhere_in_the_checkpoint_module():
    source = Path(checkpoint.__file__).read_text()
    assert "import pickle" not in source
    assert "allow_pickle=True" not in source
    assert "np.load(" not in source
