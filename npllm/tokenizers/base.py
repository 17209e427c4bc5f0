"""What every tokenizer shares: the JSON save/load interface, input checks, and rebuilding any tokenizer
from the dict it saved (:func:`tokenizer_from_dict`, dispatching on its ``"type"``)."""
from __future__ import annotations

import json
import os

import numpy as np

from npllm.checkpoint import write_atomic
from npllm.errors import CheckpointError

MAX_TOKENIZER_FILE_BYTES = 256 * 2**20   # GPT-2's vocab.json is 1 MiB, Llama 3's tokenizer.json 9 MiB


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


def _check_training_text(text) -> str:
    if not _check_text(text):
        raise ValueError("cannot train a tokenizer on empty text")
    return text


def _check_ids(ids, vocab_size: int) -> list[int]:
    """Token ids as a list of Python ints, each in [0, vocab_size), else a ValueError/TypeError."""
    array = np.asarray(ids)
    if array.size == 0:
        return []
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"ids must be a 1-D sequence of ints, got shape {array.shape} dtype {array.dtype}")
    bad = (array < 0) | (array >= vocab_size)
    if bad.any():
        raise ValueError(f"token id {int(array[bad][0])} is out of range for vocabulary size {vocab_size}"
                         f" (valid ids are 0..{vocab_size - 1})")
    return array.tolist()


def _read_text(path) -> str:
    """The UTF-8 text of a tokenizer file; ValueError (CheckpointError) naming it when too big or not UTF-8."""
    size = os.stat(path).st_size
    if size > MAX_TOKENIZER_FILE_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes, more than the {MAX_TOKENIZER_FILE_BYTES:,}-byte limit "
                              "for a tokenizer file")
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path}: not UTF-8 text (invalid byte at offset {error.start})") from None


class Tokenizer:
    """Base class: JSON save/load; subclasses define train, encode, decode, vocab_size, to_dict, from_state."""

    type_name = ""
    registry: dict = {}          # type_name → subclass: what tokenizer_from_dict dispatches on

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            Tokenizer.registry[cls.type_name] = cls

    def save(self, path) -> None:
        """Write the tokenizer to ``path`` as JSON (rebuild it with ``load`` or :func:`load_tokenizer`),
        atomically (:func:`npllm.checkpoint.write_atomic`)."""
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a tokenizer saved by ``save``; the JSON's ``"type"`` must match the class called."""
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, cls):
            raise ValueError(f"{path} holds a {tokenizer.type_name!r} tokenizer, not {cls.type_name!r}")
        return tokenizer

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def tokenizer_from_dict(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` (the JSON stored in a checkpoint's metadata)."""
    kind = state.get("type") if isinstance(state, dict) else None
    cls = Tokenizer.registry.get(kind)
    if cls is None:
        raise ValueError(f"unknown tokenizer type {kind!r}; expected one of "
                         f"{', '.join(map(repr, Tokenizer.registry))}")
    try:
        return cls.from_state(state)
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"malformed {kind!r} tokenizer state: {type(error).__name__}: {error}") from None


def load_tokenizer(path) -> Tokenizer:
    """Read any tokenizer written by ``save``."""
    try:
        state = json.loads(_read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file {path} not found") from None
    except ValueError as error:
        raise ValueError(f"{path} is not a tokenizer JSON file: {error}") from None
    return tokenizer_from_dict(state)
