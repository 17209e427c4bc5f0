"""Checkpoints: one safetensors file holding weights, optimizer state and JSON metadata. No pickle, ever.

Layout of a checkpoint file (the safetensors format: an 8-byte little-endian header length, a JSON
header, then raw tensor bytes — https://github.com/huggingface/safetensors):

- tensors ``model.<param name>``: the model's params dict, e.g. ``model.h.0.attn.c_attn.weight``;
- tensors ``optim.<key>``: the optimizer's state arrays (``Optimizer.state_dict()[0]``), e.g. ``optim.m.wte.weight``;
- metadata key ``npllm``: a JSON object with ``format_version`` (1), ``model_type``, ``model_config``,
  ``tokenizer``, ``optimizer`` (``Optimizer.state_dict()[1]``), ``step``, ``rng_state`` (a NumPy
  ``Generator.bit_generator.state``), ``extra``, and ``checksum``: SHA-256 over every tensor's name,
  dtype, shape and bytes in sorted name order, so a flipped byte anywhere in the data is caught on load.

File names: ``npllm train`` writes ``ckpt.safetensors`` (the latest state, what ``--resume`` reads) and
``best.safetensors`` (the lowest validation loss so far) into ``--out-dir``.  :func:`load_checkpoint`
given a directory reads ``<dir>/ckpt.safetensors``.

Writes are atomic: the bytes go to a temporary file in the same directory, are flushed and fsynced, and
``os.replace`` swaps it in, so a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from npllm.errors import CheckpointError

FORMAT_VERSION = 1
LATEST_NAME = "ckpt.safetensors"   # written every eval interval; --resume and directory paths read it
BEST_NAME = "best.safetensors"     # the checkpoint with the lowest validation loss
META_KEY = "npllm"
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."
META_FIELDS = ("model_type", "model_config", "tokenizer", "optimizer", "step", "rng_state", "extra")
_META_DEFAULTS: dict[str, Any] = {"model_type": None, "model_config": {}, "tokenizer": {}, "optimizer": {},
                                  "step": 0, "rng_state": None, "extra": {}}


class Checkpoint(NamedTuple):
    """What load_checkpoint returns: params and optimizer arrays (name -> ndarray) and the metadata dict."""
    params: dict[str, np.ndarray]
    optimizer_arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def rng_state(rng: np.random.Generator) -> dict:
    """The JSON-able state of a NumPy Generator (its bit_generator.state), for meta["rng_state"]."""
    return rng.bit_generator.state


def restore_rng(state: Mapping) -> np.random.Generator:
    """A NumPy Generator continuing exactly where the one whose rng_state() was saved stopped."""
    bit_generator_cls = getattr(np.random, state["bit_generator"], None)
    if bit_generator_cls is None:
        raise CheckpointError(f"rng_state: unknown bit generator {state['bit_generator']!r}")
    bit_generator = bit_generator_cls()
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)


def _canonical(array: np.ndarray) -> np.ndarray:
    """Contiguous, little-endian: the bytes safetensors writes and reads back, so the checksum agrees."""
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def tensor_checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 hex over each tensor's name, dtype, shape and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = _canonical(tensors[name])
        header = f"{name}\0{array.dtype.str}\0{array.shape}\0"
        digest.update(header.encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


def _collect_tensors(params: Mapping[str, np.ndarray], optimizer_arrays: Mapping[str, np.ndarray] | None):
    tensors: dict[str, np.ndarray] = {}
    for prefix, group, what in ((MODEL_PREFIX, params, "params"), (OPTIM_PREFIX, optimizer_arrays or {},
                                                                   "optimizer_arrays")):
        for name, array in group.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"{what}: names must be non-empty strings, got {name!r}")
            if not isinstance(array, np.ndarray):
                raise TypeError(f"{what}[{name!r}]: expected a numpy array, got {type(array).__name__}")
            tensors[prefix + name] = _canonical(array)
    return tensors


def _build_meta(meta: Mapping[str, Any] | None, checksum: str) -> str:
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(META_FIELDS))
    if unknown:
        raise ValueError(f"meta: unknown keys {unknown}; expected a subset of {list(META_FIELDS)} "
                         "(put anything else under 'extra')")
    full = {"format_version": FORMAT_VERSION, **_META_DEFAULTS, **meta, "checksum": checksum}
    try:
        return json.dumps(full, sort_keys=True)   # NaN/inf allowed: Python reads them back
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta: must be JSON-serialisable (plain dicts, lists, str, numbers, None): {exc}") from exc


def save_checkpoint(path: str | os.PathLike, params: Mapping[str, np.ndarray], *,
                    optimizer_arrays: Mapping[str, np.ndarray] | None = None,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write params (+ optimizer arrays, metadata) to one safetensors file atomically; returns the path."""
    from safetensors.numpy import save  # lazy: keeps `import npllm` light

    path = Path(path)
    tensors = _collect_tensors(params, optimizer_arrays)
    data = save(tensors, metadata={META_KEY: _build_meta(meta, tensor_checksum(tensors))})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())   # the bytes are on disk before the rename makes them visible
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); platforms that cannot open a directory skip it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """path itself for a file; <path>/ckpt.safetensors for a directory (an --out-dir)."""
    path = Path(path)
    if path.is_dir():
        latest = path / LATEST_NAME
        if not latest.is_file():
            raise CheckpointError(f"no {LATEST_NAME} in directory {path} (is it an npllm --out-dir?)")
        return latest
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _read_header_meta(data: bytes, path: Path) -> dict:
    """The parsed npllm metadata JSON from a safetensors header."""
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + header_len])
        meta_json = header.get("__metadata__", {}).get(META_KEY)
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header: {exc}") from exc
    if meta_json is None:
        raise CheckpointError(f"{path}: not an npllm checkpoint (no '{META_KEY}' metadata); a Hugging Face "
                              "model.safetensors loads with GPT.from_pretrained")
    try:
        meta = json.loads(meta_json)
    except ValueError as exc:
        raise CheckpointError(f"{path}: corrupt npllm metadata (bad JSON): {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt npllm metadata: expected a JSON object, got {type(meta).__name__}")
    return meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint file (or <dir>/ckpt.safetensors); raises CheckpointError if unusable."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = resolve_checkpoint_path(path)
    data = path.read_bytes()
    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (not a valid safetensors file): "
                              f"{exc}") from exc
    meta = _read_header_meta(data, path)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown format_version {version!r}; this npllm reads {FORMAT_VERSION}")
    if tensor_checksum(tensors) != meta.get("checksum"):
        raise CheckpointError(f"{path}: checksum mismatch: file is corrupt")
    params, optimizer_arrays = {}, {}
    for name, array in tensors.items():
        if name.startswith(MODEL_PREFIX):
            params[name[len(MODEL_PREFIX):]] = array
        elif name.startswith(OPTIM_PREFIX):
            optimizer_arrays[name[len(OPTIM_PREFIX):]] = array
        else:
            raise CheckpointError(f"{path}: unexpected tensor {name!r} (expected 'model.*' or 'optim.*')")
    return Checkpoint(params, optimizer_arrays, meta)


def check_params_match(loaded: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Raise CheckpointError unless loaded has exactly expected's names, shapes and dtypes."""
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    mismatched = [f"{name}: checkpoint {loaded[name].dtype}{tuple(loaded[name].shape)}, model "
                  f"{expected[name].dtype}{tuple(expected[name].shape)}"
                  for name in sorted(set(loaded) & set(expected))
                  if loaded[name].shape != expected[name].shape or loaded[name].dtype != expected[name].dtype]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{label} {len(items)}: {', '.join(items[:5])}{more}")
    raise CheckpointError("checkpoint does not match the model: " + "; ".join(problems))
