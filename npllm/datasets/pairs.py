"""Source/target pairs for sequence-to-sequence training: vocabularies, padded id arrays and batches.

Each side is split into tokens — characters (``level="char"``) or whitespace-separated words
(``level="word"``) — and mapped to ids by a :class:`Vocab` whose first four ids are reserved:
``<pad>`` 0 fills rows to a common length, ``<bos>`` 1 starts the decoder's input, ``<eos>`` 2 ends the
target, ``<unk>`` 3 stands for a token never seen in training.

Teacher forcing (Williams & Zipser 1989): the decoder reads the true previous token, so for a target
y_1 … y_n the decoder input is ``<bos> y_1 … y_n`` and the output it must predict is ``y_1 … y_n <eos>``;
output positions past the end hold ``IGNORE_INDEX`` so the loss skips them.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
IGNORE_INDEX = -100
LEVELS = ("char", "word")


def split_tokens(text: str, level: str) -> list[str]:
    """Characters of ``text`` (level "char") or its whitespace-separated words (level "word")."""
    if level == "char":
        return list(text)
    if level == "word":
        return text.split()
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def join_tokens(tokens: list[str], level: str) -> str:
    """The inverse of :func:`split_tokens` (words are joined with single spaces)."""
    return ("" if level == "char" else " ").join(tokens)


class Vocab:
    """Token ↔ id for one side of the pairs; ids 0–3 are <pad>, <bos>, <eos>, <unk>."""

    def __init__(self, tokens):
        self.tokens = [PAD, BOS, EOS, UNK] + [t for t in tokens if t not in (PAD, BOS, EOS, UNK)]
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens must be distinct")
        self.id_of = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, sequences) -> "Vocab":
        """Every distinct token of ``sequences`` (lists of tokens), in sorted order."""
        return cls(sorted({token for sequence in sequences for token in sequence}))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens) -> list[int]:
        """Ids of ``tokens``; an unseen token becomes <unk>."""
        return [self.id_of.get(token, UNK_ID) for token in tokens]

    def decode(self, ids) -> list[str]:
        """Tokens of ``ids`` up to the first <eos>, skipping <pad> and <bos>."""
        out = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(self.tokens[i])
        return out

    def to_dict(self) -> dict:
        return {"tokens": self.tokens[4:]}

    @classmethod
    def from_dict(cls, state: dict) -> "Vocab":
        return cls(state["tokens"])


def load_pairs(path) -> list[tuple[str, str]]:
    """Read a UTF-8 file of ``source<TAB>target`` lines (blank lines skipped); errors name the line."""
    from npllm.data import load_text
    pairs = []
    for number, line in enumerate(load_text(path).split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{path}, line {number}: expected 'source<TAB>target' with both sides non-empty, "
                             f"got {line[:60]!r}")
        pairs.append((parts[0].strip(), parts[1].strip()))
    if len(pairs) < 10:
        raise ValueError(f"{path} holds {len(pairs)} pairs; at least 10 are needed (the last 10% are held out)")
    return pairs


def pad_rows(rows: list[list[int]], fill: int) -> np.ndarray:
    """Lists of ids → int64 (N, longest) array, each row right-padded with ``fill``."""
    out = np.full((len(rows), max(map(len, rows))), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


class PairArrays(NamedTuple):
    """Encoded pairs: src (N, Ts) right-padded with <pad>, tgt (N, Tt) = y_1 … y_n <eos> then <pad>."""
    src: np.ndarray
    tgt: np.ndarray
    src_len: np.ndarray    # (N,) source lengths
    tgt_len: np.ndarray    # (N,) target lengths including <eos>


def encode_pairs(pairs, src_vocab: Vocab, tgt_vocab: Vocab, level: str) -> PairArrays:
    """Tokenise and encode (source, target) strings into padded arrays."""
    src_rows = [src_vocab.encode(split_tokens(s, level)) for s, _ in pairs]
    tgt_rows = [tgt_vocab.encode(split_tokens(t, level)) + [EOS_ID] for _, t in pairs]
    if any(len(row) == 0 for row in src_rows):
        raise ValueError("every source must hold at least one token")
    return PairArrays(pad_rows(src_rows, PAD_ID), pad_rows(tgt_rows, PAD_ID),
                      np.array([len(r) for r in src_rows]), np.array([len(r) for r in tgt_rows]))


class Batch(NamedTuple):
    src: np.ndarray        # (B, Ts) source ids, right-padded with <pad>
    tgt_in: np.ndarray     # (B, Tt) <bos> y_1 … y_n, then <pad>
    tgt_out: np.ndarray    # (B, Tt) y_1 … y_n <eos>, then IGNORE_INDEX
    n_tokens: int          # target tokens the loss counts


def make_batch(data: PairArrays, rows) -> Batch:
    """The batch of ``rows`` (indices), cut to its longest source and target (less padding to compute)."""
    rows = np.asarray(rows)
    src_len, tgt_len = int(data.src_len[rows].max()), int(data.tgt_len[rows].max())
    src = data.src[rows, :src_len]
    tgt_out = data.tgt[rows, :tgt_len]
    tgt_in = np.concatenate([np.full((len(rows), 1), BOS_ID), tgt_out[:, :-1]], axis=1)
    tgt_in = np.where(tgt_in == EOS_ID, PAD_ID, tgt_in)        # <eos> is never an input
    tgt_out = np.where(tgt_out == PAD_ID, IGNORE_INDEX, tgt_out)
    return Batch(src, tgt_in, tgt_out, int(data.tgt_len[rows].sum()))


def split_held_out(pairs: list, fraction: float = 0.1) -> tuple[list, list]:
    """(first 90%, last 10%) of ``pairs``, at least one pair in each."""
    n_held = max(1, int(round(len(pairs) * fraction)))
    if n_held >= len(pairs):
        raise ValueError(f"cannot hold out {n_held} of {len(pairs)} pairs")
    return pairs[:-n_held], pairs[-n_held:]

