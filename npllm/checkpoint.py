"""Checkpoints: one safetensors file holding weights, optimizer state and JSON metadata. No pickle, ever.

Layout of a checkpoint file (the safetensors format: an 8-byte little-endian header length, a JSON
header, then raw tensor bytes — https://github.com/huggingface/safetensors):

- tensors ``model.<param name>``: the model's params dict, e.g. ``model.h.0.attn.c_attn.weight``;
- tensors ``optim.<key>``: the optimizer's state arrays (``Optimizer.state_dict()[0]``), e.g. ``optim.m.wte.weight``;
- metadata key ``npllm``: a JSON object with ``format_version`` (2), ``model_type``, ``model_config``,
  ``tokenizer``, ``optimizer`` (``Optimizer.state_dict()[1]``), ``step``, ``rng_state`` (a NumPy
  ``Generator.bit_generator.state``), ``extra``, and ``checksum``: SHA-256 over the canonical JSON of
  every other metadata field, then every tensor's name, dtype, shape and bytes in sorted name order
  (:func:`checksum`).  A flipped byte in the weights *or* an edited tokenizer, step or config is caught.

Format version 1 checksummed the tensors only, so its metadata cannot be verified: such files are refused
with a message saying to re-save them.  Nothing reads them "trusting" the metadata, since a wrong
tokenizer or config loads silently and generates garbage.

Loading verifies before it allocates: the header length against the file size, the header's tensor
table (dtypes, shapes, offsets that tile the data exactly), the metadata's types and bounds — all from
the header alone — and only then reads the data and checks the SHA-256.  A loader that builds a model
from ``model_config`` checks that config against the tensor shapes first
(:func:`npllm.models.check_model_config`, which uses :func:`check_config_bounds`).

File names: ``npllm train`` writes ``ckpt.safetensors`` (the latest state, what ``--resume`` reads) and
``best.safetensors`` (the lowest validation loss so far) into ``--out-dir``.  :func:`load_checkpoint`
given a directory reads ``<dir>/ckpt.safetensors``.

Every file npllm writes (checkpoints, Hugging Face directories, tokenizers) goes through
:func:`write_atomic`: a temporary file in the same directory, flushed and fsynced, then ``os.replace``,
so a crash mid-write leaves the previous file intact.  :func:`remove_stale_temp_files` deletes the
temporary files a killed process leaves behind.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from npllm.errors import CheckpointError, CheckpointWriteError

FORMAT_VERSION = 2
LATEST_NAME = "ckpt.safetensors"   # written every eval interval; --resume and directory paths read it
BEST_NAME = "best.safetensors"     # the checkpoint with the lowest validation loss
META_KEY = "npllm"
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."
META_FIELDS = ("model_type", "model_config", "tokenizer", "optimizer", "step", "rng_state", "extra")
_META_DEFAULTS: dict[str, Any] = {"model_type": None, "model_config": {}, "tokenizer": {}, "optimizer": {},
                                  "step": 0, "rng_state": None, "extra": {}}
MAX_HEADER_BYTES = 100 * 2**20     # safetensors' own limit on the JSON header
# Bytes per element of the safetensors dtypes NumPy can hold (BF16 is listed so a header still parses and
# the error can say "convert to float32").
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
# What mkstemp makes of ".<name>." + 8 random characters + ".tmp" (see write_atomic).
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class Checkpoint(NamedTuple):
    """What load_checkpoint returns: params and optimizer arrays (name -> ndarray) and the metadata dict."""
    params: dict[str, np.ndarray]
    optimizer_arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


class TensorInfo(NamedTuple):
    """One entry of a safetensors header: dtype ("F32", ...), shape, and byte range within the data."""
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsHeader(NamedTuple):
    """A safetensors file's header, read without its data: tensors by name, ``__metadata__`` and sizes."""
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int          # offset of the first tensor byte: 8 + header length
    file_size: int


class Field(NamedTuple):
    """The bounds of one config field: an int in [low, high], a float in [low, high), or a bool."""
    type: type               # int, float or bool (bounds unused)
    low: float
    high: float


# ------------------------------------------------------------------------------------------- writing
def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one.

    The bytes go to ``.<name>.XXXXXXXX.tmp`` in the same directory, are flushed and fsynced, then
    ``os.replace`` swaps the file in and the directory is fsynced (so the rename survives a power cut).
    On failure the temporary file is removed and a :class:`CheckpointWriteError` (an OSError) names the
    file; the directory must exist.
    """
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointWriteError(path, exc.strerror or str(exc), exc.errno) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())   # the bytes are on disk before the rename makes them visible
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointWriteError(path, exc.strerror or str(exc), exc.errno) from exc
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


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.XXXXXXXX.tmp`` files a killed :func:`write_atomic` left in ``directory``.

    Call it when no other process writes into ``directory`` (at the start of a run); returns the paths
    removed.  Only regular files with write_atomic's naming pattern are touched."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return removed


# ------------------------------------------------------------------------------------------ checksum
def rng_state(rng: np.random.Generator) -> dict:
    """The JSON-able state of a NumPy Generator (its bit_generator.state), for meta["rng_state"]."""
    return rng.bit_generator.state


def restore_rng(state: Mapping) -> np.random.Generator:
    """A NumPy Generator continuing exactly where the one whose rng_state() was saved stopped."""
    if not isinstance(state, Mapping) or not isinstance(state.get("bit_generator"), str):
        raise CheckpointError("rng_state: expected a bit generator state (a dict naming 'bit_generator')")
    bit_generator_cls = getattr(np.random, state["bit_generator"], None)
    if not (isinstance(bit_generator_cls, type) and issubclass(bit_generator_cls, np.random.BitGenerator)):
        raise CheckpointError(f"rng_state: unknown bit generator {state['bit_generator']!r}")
    bit_generator = bit_generator_cls()
    try:
        bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"rng_state: malformed {state['bit_generator']} state: {exc}") from None
    return np.random.Generator(bit_generator)


def _canonical(array: np.ndarray) -> np.ndarray:
    """Contiguous, little-endian: the bytes safetensors writes and reads back, so the checksum agrees."""
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def canonical_json(value) -> str:
    """The one JSON text of a metadata value that the checksum covers: sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def tensor_checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 hex over each tensor's name, dtype, shape and bytes, in sorted name order (version 1's)."""
    digest = hashlib.sha256()
    _update_with_tensors(digest, tensors)
    return digest.hexdigest()


def _update_with_tensors(digest, tensors: Mapping[str, np.ndarray]) -> None:
    for name in sorted(tensors):
        array = _canonical(tensors[name])
        header = f"{name}\0{array.dtype.str}\0{array.shape}\0"
        digest.update(header.encode("utf-8"))
        digest.update(array.tobytes())


def checksum(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 hex over the canonical JSON of every metadata field but ``checksum``, then the tensors."""
    digest = hashlib.sha256()
    covered = {key: value for key, value in meta.items() if key != "checksum"}
    digest.update(canonical_json(covered).encode("ascii"))
    digest.update(b"\0")
    _update_with_tensors(digest, tensors)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- metadata checks
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_meta(meta: Mapping[str, Any], where: str = "meta") -> None:
    """CheckpointError naming the field unless ``meta`` has the types and bounds of a version-2 file."""
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    unknown = sorted(set(meta) - set(META_FIELDS) - {"format_version", "checksum"})
    if unknown:
        raise CheckpointError(f"{where}: unknown fields {unknown}")
    if meta.get("model_type") is not None and not isinstance(meta["model_type"], str):
        raise CheckpointError(f"{where}: model_type must be a string, got {_short(meta['model_type'])}")
    for name in ("model_config", "tokenizer", "optimizer", "extra"):
        if name in meta and not isinstance(meta[name], Mapping):
            raise CheckpointError(f"{where}: {name} must be a JSON object, got {type(meta[name]).__name__}")
    for key, value in meta.get("model_config", {}).items():
        if value is not None and not isinstance(value, (str, bool, int, float)):
            raise CheckpointError(f"{where}: model_config.{key} must be a number, string or bool, got "
                                  f"{type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{where}: model_config.{key} must be finite, got {value}")
    step = meta.get("step", 0)
    if not _is_int(step) or step < 0:
        raise CheckpointError(f"{where}: step must be a non-negative int, got {_short(step)}")
    if meta.get("rng_state") is not None and not isinstance(meta["rng_state"], Mapping):
        raise CheckpointError(f"{where}: rng_state must be a JSON object or null, got "
                              f"{type(meta['rng_state']).__name__}")
    if "checksum" in meta and not (isinstance(meta["checksum"], str)
                                   and re.fullmatch(r"[0-9a-f]{64}", meta["checksum"])):
        raise CheckpointError(f"{where}: checksum must be 64 hexadecimal digits, got {_short(meta['checksum'])}")


def check_config_bounds(fields: Mapping[str, Field], config: Mapping[str, Any], *,
                        where: str = "model_config") -> None:
    """CheckpointError naming ``where.<field>`` unless every field of ``fields`` is in ``config`` with
    the right type and within its bounds: ints (not bools, not 1e9 written as a float) in [low, high],
    floats in [low, high), bools true or false.  Only reads numbers, so it runs before any model is built."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(config).__name__}")
    for name, field in fields.items():
        if name not in config:
            raise CheckpointError(f"{where}: missing {name}")
        value = config[name]
        if field.type is bool:
            if not isinstance(value, bool):
                raise CheckpointError(f"{where}: {name} must be true or false, got {_short(value)}")
        elif field.type is int:
            if not _is_int(value) or not field.low <= value <= field.high:
                raise CheckpointError(f"{where}: {name} must be an int in [{field.low}, {field.high:,}], got "
                                      f"{_short(value)}")
        elif (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
              or not field.low <= value < field.high):
            raise CheckpointError(f"{where}: {name} must be a number in [{field.low}, {field.high}), got "
                                  f"{_short(value)}")


def check_tensor_shapes(expected: Mapping[str, tuple], actual: Mapping[str, tuple], *, where: str) -> None:
    """CheckpointError listing the missing, unexpected and mis-shaped tensors of ``actual``."""
    missing = [name for name in expected if name not in actual]
    unexpected = sorted(set(actual) - set(expected))
    wrong = [f"{name} {tuple(actual[name])} (expected {tuple(expected[name])})" for name in expected
             if name in actual and tuple(actual[name]) != tuple(expected[name])]
    problems = [f"{label}: {', '.join(items[:4])}{' …' if len(items) > 4 else ''}"
                for label, items in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                     ("wrong shapes", wrong)) if items]
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------- saving
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


def _build_meta(meta: Mapping[str, Any] | None, tensors: Mapping[str, np.ndarray]) -> str:
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(META_FIELDS))
    if unknown:
        raise ValueError(f"meta: unknown keys {unknown}; expected a subset of {list(META_FIELDS)} "
                         "(put anything else under 'extra')")
    full = {"format_version": FORMAT_VERSION, **_META_DEFAULTS, **meta}
    try:
        # Through JSON and back, so the checksum covers exactly what a reader will parse (tuples become
        # lists, int keys strings).  NaN/inf are allowed: Python reads them back.
        full = json.loads(json.dumps(full, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta: must be JSON-serialisable (plain dicts, lists, str, numbers, None): {exc}") from exc
    validate_meta(full)
    return json.dumps({**full, "checksum": checksum(full, tensors)}, sort_keys=True)


def save_checkpoint(path: str | os.PathLike, params: Mapping[str, np.ndarray], *,
                    optimizer_arrays: Mapping[str, np.ndarray] | None = None,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write params (+ optimizer arrays, metadata) to one safetensors file atomically; returns the path.

    A bad argument is a TypeError/ValueError before the file is touched; a failed write is a
    :class:`CheckpointWriteError` naming the file (the previous checkpoint is then intact)."""
    from safetensors.numpy import save  # lazy: keeps `import npllm` light

    path = Path(path)
    tensors = _collect_tensors(params, optimizer_arrays)
    data = save(tensors, metadata={META_KEY: _build_meta(meta, tensors)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(path, f"cannot create its directory: {exc.strerror or exc}", exc.errno) from exc
    return write_atomic(path, data)


# ------------------------------------------------------------------------------------------- loading
def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """path itself for a file; <path>/ckpt.safetensors for a directory (an --out-dir)."""
    path = Path(path)
    if path.is_dir():
        latest = path / LATEST_NAME
        if not latest.is_file():
            if (path / "model.safetensors").is_file():
                raise CheckpointError(f"{path} holds model.safetensors but no config.json (a Hugging Face "
                                      f"GPT-2 directory needs both) and no {LATEST_NAME}")
            raise CheckpointError(f"no {LATEST_NAME} in directory {path} (is it an npllm --out-dir?)")
        return latest
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise CheckpointError(f"{path}: a broken symbolic link or a symlink loop")
        raise CheckpointError(f"checkpoint not found: {path}" if not path.exists() else
                              f"{path} is not a regular file")
    return path


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and check a safetensors file's header — never its data: the length against the file size,
    then each tensor's dtype, shape and byte range (the ranges must tile the data exactly)."""
    path = Path(path)

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: truncated or corrupt safetensors file: {why}")

    try:
        with open(path, "rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise CheckpointError(f"{path} is not a regular file")
            if file_size < 8:
                raise corrupt(f"{file_size} bytes, shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > file_size - 8:
                raise corrupt(f"the header length {header_len:,} is larger than the file ({file_size:,} bytes)")
            if header_len > MAX_HEADER_BYTES:
                raise corrupt(f"the header length {header_len:,} exceeds the {MAX_HEADER_BYTES:,}-byte limit")
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise corrupt(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise corrupt("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise corrupt("__metadata__ must map names to strings")
    data_start, tensors = 8 + header_len, {}
    for name, entry in header.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
                and all(_is_int(n) and n >= 0 for n in entry["shape"] + entry["data_offsets"])):
            raise corrupt(f"tensor {name!r} needs a shape and two data_offsets of non-negative ints")
        if entry.get("dtype") not in DTYPE_SIZES:
            raise corrupt(f"tensor {name!r} has an unsupported dtype {_short(entry.get('dtype'))}")
        begin, end = entry["data_offsets"]
        if end - begin != math.prod(entry["shape"]) * DTYPE_SIZES[entry["dtype"]]:
            raise corrupt(f"tensor {name!r}: its byte range does not hold a {entry['dtype']} {entry['shape']}")
        tensors[name] = TensorInfo(entry["dtype"], tuple(entry["shape"]), begin, end)
    position = 0
    for info in sorted(tensors.values(), key=lambda info: (info.begin, info.end)):
        if info.begin != position:
            raise corrupt("tensor byte ranges overlap or leave gaps")
        position = info.end
    if position != file_size - data_start:
        raise corrupt(f"the header describes {position:,} bytes of tensor data, the file holds "
                      f"{file_size - data_start:,}")
    return SafetensorsHeader(tensors, metadata, data_start, file_size)


def _parse_meta(header: SafetensorsHeader, path: Path) -> dict:
    """The npllm metadata of a header, its version and field types checked."""
    meta_json = header.metadata.get(META_KEY)
    if meta_json is None:
        raise CheckpointError(f"{path}: not an npllm checkpoint (no '{META_KEY}' metadata); a Hugging Face "
                              "model.safetensors loads with GPT.from_pretrained")
    try:
        meta = json.loads(meta_json)
    except ValueError as exc:
        raise CheckpointError(f"{path}: corrupt npllm metadata (bad JSON): {exc}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt npllm metadata: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version == 1:
        raise CheckpointError(f"{path}: format_version 1 checksums only the tensors, so its tokenizer, config "
                              f"and step cannot be verified; re-save it (re-train, or load it with the npllm "
                              f"that wrote it and save a fresh run) as format_version {FORMAT_VERSION}")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown format_version {_short(version)}; this npllm reads {FORMAT_VERSION}")
    validate_meta(meta, f"{path}: metadata")
    if "checksum" not in meta:
        raise CheckpointError(f"{path}: metadata has no checksum")
    return meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint file (or <dir>/ckpt.safetensors); raises CheckpointError if unusable.

    The header and metadata are checked before the data is read; the data then must match the SHA-256."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = resolve_checkpoint_path(path)
    header = read_safetensors_header(path)
    meta = _parse_meta(header, path)
    for name in header.tensors:
        if not name.startswith((MODEL_PREFIX, OPTIM_PREFIX)):
            raise CheckpointError(f"{path}: unexpected tensor {name!r} (expected 'model.*' or 'optim.*')")
    try:
        data = path.read_bytes()
        if len(data) != header.file_size:
            raise CheckpointError(f"{path}: the file changed while it was read")
        tensors = load(data)
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (not a valid safetensors file): "
                              f"{exc}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if checksum(meta, tensors) != meta["checksum"]:
        raise CheckpointError(f"{path}: checksum mismatch: file is corrupt (its weights or its metadata "
                              "changed after it was written)")
    params, optimizer_arrays = {}, {}
    for name, array in tensors.items():
        if name.startswith(MODEL_PREFIX):
            params[name[len(MODEL_PREFIX):]] = array
        else:
            optimizer_arrays[name[len(OPTIM_PREFIX):]] = array
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
