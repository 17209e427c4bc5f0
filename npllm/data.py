"""Corpora and batches: the built-in corpus, UTF-8 text files, the train/val split, random windows.

A language model learns to predict token t+1 from tokens ≤ t, so a training example is a window of
``block_size + 1`` consecutive ids: ``x`` is its first ``block_size`` ids and ``y`` the same window
shifted by one (nanoGPT's ``get_batch``).  Errors are ``ValueError``s whose message a command line can
print as is (the training code prefixes the flag: ``--data``, ``--block-size``).
"""
from __future__ import annotations

import errno
import os
import re
import stat
from functools import lru_cache
from pathlib import Path

import numpy as np

# Typographic punctuation in the docs, written as plain ASCII so a character vocabulary stays small.
_ASCII_PUNCTUATION = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                                    "\u2026": "...", "\u2014": "--", "\u2013": "-"})
# A heading underline or a transition: a whole line of one repeated reST adornment character.
_ADORNMENT_LINE = re.compile(r"^([*=\-~^#])\1{2,}$", re.MULTILINE)
# **Bold** at a phrase start ("**PEP 8**", "**CPython implementation detail:**", maybe across a line
# break), never "x**2".
_BOLD = re.compile(r"(?<![\w*])\*\*([A-Z][^*]{0,80}?)\*\*(?![\w*])")
# load_text's limit: 256 MiB of text is far beyond what a NumPy model trains on (enwik8 is 100 MB) and the
# encoded ids (8 bytes a token) still fit in memory.
MAX_TEXT_BYTES = 256 * 2**20


@lru_cache(maxsize=1)
def builtin_corpus() -> str:
    """Python's own documentation topics (``pydoc_data``, shipped with CPython) as plain text."""
    from pydoc_data.topics import topics   # the text behind help("assert"), help("with"), ...

    text = "\n\n".join(topics[name] for name in sorted(topics))   # sorted: the same text everywhere
    text = text.translate(_ASCII_PUNCTUATION)
    text = _ADORNMENT_LINE.sub("", text)
    text = _BOLD.sub(r"\1", text)
    text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)        # trailing spaces
    text = re.sub(r"\n{3,}", "\n\n", text)                         # at most one blank line in a row
    return text.strip("\n") + "\n"


def load_text(path, max_bytes: int | None = None) -> str:
    """Read a UTF-8 text file (a BOM is dropped, Windows line ends become ``\\n``).

    Refused with a ValueError naming the path — never quoting the file's content — : a missing path, a
    symbolic-link loop, anything but a regular file (a directory, ``/dev/zero``, a FIFO, a socket), a
    file over ``max_bytes`` (default :data:`MAX_TEXT_BYTES`; checked with ``stat`` before reading), NUL
    bytes (binary data), bytes that are not UTF-8, and a file empty or holding only whitespace.
    """
    path = Path(path)
    limit = MAX_TEXT_BYTES if max_bytes is None else max_bytes
    try:
        info = os.stat(path)
    except OSError as error:
        raise ValueError(_stat_problem(path, error)) from None
    _check_regular(path, info.st_mode)
    if info.st_size > limit:
        raise ValueError(f"{path} is {info.st_size:,} bytes, more than the limit of {limit:,} bytes for a "
                         "text corpus")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as file:
            _check_regular(path, os.fstat(file.fileno()).st_mode)
            data = file.read(limit + 1)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or type(error).__name__}") from None
    if len(data) > limit:
        raise ValueError(f"{path} grew past the limit of {limit:,} bytes while it was read")
    if b"\x00" in data:
        raise ValueError(f"{path} is not a UTF-8 text file (it contains NUL bytes: binary data?)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file (the bytes at offset {error.start} are not valid "
                         "UTF-8)") from None
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise ValueError(f"{path} is empty" if not text else f"{path} holds only whitespace")
    return text


def _stat_problem(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return f"{path}: too many levels of symbolic links (a symlink loop?)"
    if error.errno == errno.ENOENT:
        return f"{path} does not exist" + (" (a broken symbolic link)" if path.is_symlink() else "")
    return f"cannot read {path}: {error.strerror or type(error).__name__}"


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path} is a directory, not a text file")
    if not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise ValueError(f"{path} is {kind}, not a regular text file")


def encode_corpus(text: str, tokenizer) -> np.ndarray:
    """Token ids of ``text`` as an int64 array ``(N,)``."""
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if ids.size == 0:
        raise ValueError("the text encodes to no tokens")
    return ids


def train_val_split(ids, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split ids ``(N,)`` into the first ``1 - val_fraction`` (train) and the rest (val), in order."""
    ids = _as_ids(ids, "ids")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    # A contiguous tail, not a random sample: val windows then never overlap train windows.
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


def check_corpus(ids, block_size: int, name: str = "corpus") -> None:
    """Raise a ValueError unless ``ids`` holds at least one window of ``block_size + 1`` tokens."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if len(ids) < block_size + 1:
        raise ValueError(f"{name} of {len(ids)} tokens is shorter than one block of block_size+1 = "
                         f"{block_size + 1} tokens; use a longer text or a smaller block size")


def check_splits(train_ids, val_ids, block_size: int) -> None:
    """Check that both splits hold a full window (a short text fails here, before any training)."""
    check_corpus(train_ids, block_size, "the training split")
    check_corpus(val_ids, block_size, "the validation split (the end of the text)")


def get_batch(data, batch_size: int, block_size: int, rng: np.random.Generator):
    """Random windows: x, y int64 ``(B, T)`` with ``y[:, t] == data[start + t + 1]``."""
    data = _as_ids(data, "data")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_corpus(data, block_size)
    # The last start leaves room for y's final token: start + block_size <= len(data) - 1.
    starts = rng.integers(0, len(data) - block_size, size=batch_size)    # (B,)
    positions = starts[:, None] + np.arange(block_size)                 # (B, T)
    return data[positions], data[positions + 1]


def sequential_batches(data, batch_size: int, block_size: int):
    """Yield (x, y) int64 ``(b, T)`` covering ``data`` in order with non-overlapping windows (b ≤ B)."""
    data = _as_ids(data, "data")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_corpus(data, block_size)
    starts = np.arange(0, len(data) - block_size, block_size)           # every full window
    for first in range(0, len(starts), batch_size):
        positions = starts[first:first + batch_size, None] + np.arange(block_size)   # (b, T)
        yield data[positions], data[positions + 1]


def _as_ids(ids, name: str) -> np.ndarray:
    """``ids`` as a 1-D int64 array, else a TypeError/ValueError naming ``name``."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D token ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)
