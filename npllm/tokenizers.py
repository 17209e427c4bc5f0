"""Tokenizers: text ↔ integer ids.  Character, word (with ``<unk>``) and byte-level BPE (GPT-2).

All three share one interface: ``Tok.train(text, vocab_size=None)``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``vocab_size``, ``save(path)`` / ``Tok.load(path)`` (JSON with a ``"type"``
field), ``to_dict()``; :func:`tokenizer_from_dict` and :func:`load_tokenizer` rebuild any of them.

Byte-level BPE follows Sennrich et al. (2016), "Neural Machine Translation of Rare Words with Subword
Units", as GPT-2 applies it (Radford et al., 2019): text is split into chunks by a regex, each chunk's
UTF-8 bytes start as 256 byte tokens, and learned merges are applied lowest rank first.  Because every
byte is a token, any string round-trips exactly.  :meth:`BPETokenizer.from_pretrained` reads GPT-2's
``vocab.json`` + ``merges.txt`` and gives the same ids as OpenAI's ``encoder.py`` and Hugging Face.
"""
from __future__ import annotations

import heapq
import json
import os
from collections import Counter, defaultdict
from functools import lru_cache

import numpy as np
import regex

from npllm.checkpoint import write_atomic
from npllm.errors import CheckpointError

# GPT-2's pre-tokenisation: contractions, letters, numbers, other symbols (each optionally with one
# leading space), and whitespace.  Merges never cross a chunk boundary, so " the" and "the." stay apart.
GPT2_SPLIT_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
# Word tokenizer: words/numbers, single punctuation marks, and whitespace runs, so it covers every
# character and joining the pieces gives the text back.
WORD_SPLIT_PATTERN = regex.compile(r"\w+|\s+|[^\w\s]")
SPECIAL_TOKEN_PATTERN = regex.compile(r"<\|[^|\s]+\|>")
UNK_TOKEN = "<unk>"
DEFAULT_BPE_VOCAB_SIZE = 512
MAX_TOKENIZER_FILE_BYTES = 256 * 2**20   # GPT-2's vocab.json is 1 MiB, Llama 3's tokenizer.json 9 MiB


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map byte → printable character, so byte tokens can be written in vocab.json as text."""
    # Printable bytes map to themselves; the other 68 (control chars, space, ...) to chars from 256 on.
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


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


class Tokenizer:
    """Base class: JSON save/load; subclasses define train, encode, decode, vocab_size, to_dict."""

    type_name = ""

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


class CharTokenizer(Tokenizer):
    """One token per character; the vocabulary is the sorted set of the training text's characters."""

    type_name = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        if (not self.chars or len(set(self.chars)) != len(self.chars)
                or not all(isinstance(char, str) and len(char) == 1 for char in self.chars)):
            raise ValueError("chars must be a non-empty list of distinct characters")
        self.char_to_id = {char: i for i, char in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str, vocab_size: int | None = None) -> "CharTokenizer":
        """Every distinct character of ``text``; ``vocab_size`` (if given) is an upper bound."""
        chars = sorted(set(_check_training_text(text)))
        if vocab_size is not None and len(chars) > vocab_size:
            raise ValueError(f"text has {len(chars)} distinct characters, more than vocab_size={vocab_size}")
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text``; an unseen character is a ValueError naming it."""
        try:
            return [self.char_to_id[char] for char in _check_text(text)]
        except KeyError as error:
            char = error.args[0]
            raise ValueError(f"character {char!r} (U+{ord(char):04X}) is not in this tokenizer's "
                             f"vocabulary of {self.vocab_size} characters") from None

    def decode(self, ids) -> str:
        """The text of token ids ``ids`` (1-D)."""
        return "".join(self.chars[i] for i in _check_ids(ids, self.vocab_size))

    def to_dict(self) -> dict:
        return {"type": self.type_name, "chars": self.chars}


class WordTokenizer(Tokenizer):
    """Words, numbers, punctuation marks and whitespace runs; rarer pieces become ``<unk>`` (id 0)."""

    type_name = "word"

    def __init__(self, words):
        self.words = list(words)
        if not self.words or self.words[0] != UNK_TOKEN or len(set(self.words)) != len(self.words):
            raise ValueError(f"words must be distinct and start with {UNK_TOKEN!r}")
        self.word_to_id = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def train(cls, text: str, vocab_size: int | None = None) -> "WordTokenizer":
        """``<unk>`` plus the ``vocab_size - 1`` most frequent pieces of ``text`` (all when None)."""
        counts = Counter(WORD_SPLIT_PATTERN.findall(_check_training_text(text)))
        if vocab_size is not None and vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (<unk> and one word), got {vocab_size}")
        # Most frequent first, ties alphabetical, so the vocabulary does not depend on dict order.
        ranked = sorted(counts, key=lambda word: (-counts[word], word))
        keep = ranked if vocab_size is None else ranked[:vocab_size - 1]
        return cls([UNK_TOKEN] + keep)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        """Ids of the pieces of ``text``; a piece not in the vocabulary gets id 0 (``<unk>``)."""
        return [self.word_to_id.get(word, 0) for word in WORD_SPLIT_PATTERN.findall(_check_text(text))]

    def decode(self, ids) -> str:
        """The pieces joined back together (``<unk>`` is written as the text ``<unk>``)."""
        return "".join(self.words[i] for i in _check_ids(ids, self.vocab_size))

    def to_dict(self) -> dict:
        return {"type": self.type_name, "words": self.words}


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ``vocab`` maps id → bytes, ``merges`` maps a pair of ids → merged id by rank."""

    type_name = "bpe"

    def __init__(self, vocab: list[bytes], merges: list[tuple[int, int, int]],
                 byte_ids: list[int] | None = None, special_tokens: dict[str, int] | None = None):
        """``merges`` in rank order as (left id, right id, merged id); ``byte_ids[b]`` is byte b's id."""
        self.vocab = list(vocab)
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        self.merge_ranks = {(left, right): rank for rank, (left, right, _) in enumerate(merges)}
        self.merged_id = {(left, right): merged for left, right, merged in merges}
        self.merges = list(merges)
        self.special_tokens = dict(special_tokens or {})
        # Special tokens (GPT-2's <|endoftext|>) are matched whole before the regex split, as in
        # Hugging Face's tokenizer.
        self._special_pattern = (regex.compile("(" + "|".join(map(regex.escape, sorted(
            self.special_tokens, key=len, reverse=True))) + ")") if self.special_tokens else None)
        self._cache: dict[str, list[int]] = {}

    # -- training ---------------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, vocab_size: int | None = None) -> "BPETokenizer":
        """Learn merges on ``text`` until ``vocab_size`` tokens (default 512) or no pair repeats."""
        vocab_size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (one token per byte), got {vocab_size}")
        chunk_counts = Counter(GPT2_SPLIT_PATTERN.findall(_check_training_text(text)))
        # Work on unique chunks weighted by frequency: far fewer than the chunks of the text.
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)   # pair -> words holding it
        for index, word in enumerate(words):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += freqs[index]
                where[pair].add(index)
        # A max-heap of (-count, pair) with stale entries skipped on pop: cheaper than max() each merge.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)
        vocab = [bytes([byte]) for byte in range(256)]
        id_of = {token: i for i, token in enumerate(vocab)}
        merges = []
        while len(vocab) < vocab_size and heap:
            negative_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -negative_count:
                continue                            # stale entry: the count changed after it was pushed
            if -negative_count < 2:
                break                               # merging a pair seen once would only memorise
            token = vocab[pair[0]] + vocab[pair[1]]
            if token not in id_of:                  # the same bytes can arise from two different splits
                id_of[token] = len(vocab)
                vocab.append(token)
            merged = id_of[token]
            merges.append((pair[0], pair[1], merged))
            changed = set()
            for index in where.pop(pair):
                word, freq = words[index], freqs[index]
                for old in zip(word, word[1:]):     # remove this word's pairs, merge, add them back
                    pair_counts[old] -= freq
                    changed.add(old)
                words[index] = word = _merge_pair(word, pair, merged)
                for new in zip(word, word[1:]):
                    pair_counts[new] += freq
                    where[new].add(index)
                    changed.add(new)
            for changed_pair in changed:
                if pair_counts[changed_pair] > 0:
                    heapq.heappush(heap, (-pair_counts[changed_pair], changed_pair))
                else:
                    del pair_counts[changed_pair]
        return cls(vocab, merges)

    # -- encoding and decoding --------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE on one pre-tokenised chunk: repeatedly merge the adjacent pair of lowest rank."""
        ids = [self.byte_ids[byte] for byte in chunk.encode("utf-8")]
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merge_ranks.get(p, float("inf")))
            if pair not in self.merge_ranks:
                break
            ids = _merge_pair(ids, pair, self.merged_id[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; any string works (unseen characters fall back to their bytes)."""
        pieces = [_check_text(text)] if self._special_pattern is None else self._special_pattern.split(text)
        ids: list[int] = []
        for position, piece in enumerate(pieces):
            if position % 2 == 1:                   # odd pieces are the captured special tokens
                ids.append(self.special_tokens[piece])
                continue
            for chunk in GPT2_SPLIT_PATTERN.findall(piece):
                cached = self._cache.get(chunk)
                if cached is None:
                    if len(self._cache) > 200_000:  # bound memory on huge, varied inputs
                        self._cache.clear()
                    cached = self._cache[chunk] = self._encode_chunk(chunk)
                ids.extend(cached)
        return ids

    def decode(self, ids) -> str:
        """Join the tokens' bytes and decode UTF-8 (an incomplete character becomes U+FFFD, as in GPT-2)."""
        data = b"".join(self.vocab[i] for i in _check_ids(ids, self.vocab_size))
        return data.decode("utf-8", errors="replace")

    # -- GPT-2's file format: vocab.json (token text -> id) and merges.txt (one "left right" per rank) --
    def _token_text(self, token_id: int) -> str:
        for text, special_id in self.special_tokens.items():
            if special_id == token_id:
                return text
        byte_to_char = bytes_to_unicode()
        return "".join(byte_to_char[byte] for byte in self.vocab[token_id])

    def to_dict(self) -> dict:
        texts = [self._token_text(i) for i in range(self.vocab_size)]
        return {"type": self.type_name, "vocab": {text: i for i, text in enumerate(texts)},
                "merges": [f"{texts[left]} {texts[right]}" for left, right, _ in self.merges]}

    @classmethod
    def from_vocab_and_merges(cls, vocab: dict[str, int], merges: list[str]) -> "BPETokenizer":
        """Build from GPT-2's representation: token text → id, and ``"left right"`` lines in rank order."""
        char_to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"vocab ids must be exactly 0..{len(vocab) - 1}")
        id_bytes: list[bytes | None] = [None] * len(vocab)
        for text, token_id in vocab.items():
            if all(char in char_to_byte for char in text):
                id_bytes[token_id] = bytes(char_to_byte[char] for char in text)
        missing_bytes = [byte for byte, char in bytes_to_unicode().items() if char not in vocab]
        if missing_bytes:
            raise ValueError(f"vocab lacks the byte token for byte {missing_bytes[0]}")
        byte_ids = [vocab[bytes_to_unicode()[byte]] for byte in range(256)]
        triples = []
        for line_number, line in enumerate(merges, 1):
            parts = line.split(" ")
            if len(parts) != 2 or not all(part in vocab for part in parts) or "".join(parts) not in vocab:
                raise ValueError(f"merge {line_number} {line!r} is not two tokens whose join is in vocab")
            triples.append((vocab[parts[0]], vocab[parts[1]], vocab["".join(parts)]))
        # A token neither a byte nor made by a merge is added text; one written <|...|> (GPT-2's
        # <|endoftext|>) is special: encode matches it whole, as Hugging Face does.
        reachable = set(byte_ids) | {merged for _, _, merged in triples}
        added = {text: i for text, i in vocab.items() if i not in reachable}
        for text, i in added.items():
            id_bytes[i] = text.encode("utf-8")
        special = {text: i for text, i in added.items() if SPECIAL_TOKEN_PATTERN.fullmatch(text)}
        if None in id_bytes:
            bad = next(text for text, i in vocab.items() if id_bytes[i] is None)
            raise ValueError(f"vocab token {bad!r} is made by a merge but is not byte-level text")
        return cls(id_bytes, triples, byte_ids=byte_ids, special_tokens=special)

    @classmethod
    def from_pretrained(cls, path) -> "BPETokenizer":
        """Read ``vocab.json`` and ``merges.txt`` (GPT-2 / Hugging Face layout) from directory ``path``.

        A missing file is a FileNotFoundError; a malformed one a CheckpointError naming the file."""
        vocab_path, merges_path = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        for needed in (vocab_path, merges_path):
            if not os.path.isfile(needed):
                raise FileNotFoundError(f"{needed} not found: a GPT-2 tokenizer directory needs "
                                        "vocab.json and merges.txt")
        try:
            vocab = json.loads(_read_text(vocab_path))
        except ValueError as error:
            raise CheckpointError(f"{vocab_path}: not JSON: {error}") from None
        _check_vocab(vocab, vocab_path)
        # The first line is a "#version: 0.2" header; blank lines (a trailing newline) carry nothing.
        merges = [line for line in _read_text(merges_path).split("\n") if line and not line.startswith("#version")]
        try:
            return cls.from_vocab_and_merges(vocab, merges)
        except ValueError as error:
            raise CheckpointError(f"{path}: vocab.json and merges.txt disagree: {error}") from None

    def save_pretrained(self, path) -> None:
        """Write ``vocab.json`` and ``merges.txt`` into directory ``path`` (created if needed), atomically."""
        os.makedirs(path, exist_ok=True)
        state = self.to_dict()
        write_atomic(os.path.join(path, "vocab.json"), json.dumps(state["vocab"], ensure_ascii=False).encode("utf-8"))
        merges = "#version: 0.2\n" + "".join(line + "\n" for line in state["merges"])
        write_atomic(os.path.join(path, "merges.txt"), merges.encode("utf-8"))


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


def _check_vocab(vocab, where) -> None:
    """CheckpointError unless vocab is a JSON object mapping token text to a non-negative int id."""
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{where}: expected a JSON object mapping token text to id, got a "
                              f"{type(vocab).__name__}")
    for text, token_id in vocab.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise CheckpointError(f"{where}: token {text[:40]!r} has id {str(token_id)[:40]!r}; ids must be "
                                  "non-negative ints")


def _merge_pair(ids: list[int], pair: tuple[int, int], merged: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right, by ``merged``."""
    out, i, last = [], 0, len(ids) - 1
    while i <= last:
        if i < last and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def tokenizer_from_dict(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` (the JSON stored in a checkpoint's metadata)."""
    kind = state.get("type") if isinstance(state, dict) else None
    try:
        if kind == "char":
            return CharTokenizer(state["chars"])
        if kind == "word":
            return WordTokenizer(state["words"])
        if kind == "bpe":
            _check_vocab(state["vocab"], "tokenizer vocab")
            return BPETokenizer.from_vocab_and_merges(state["vocab"], state["merges"])
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"malformed {kind!r} tokenizer state: {type(error).__name__}: {error}") from None
    raise ValueError(f"unknown tokenizer type {kind!r}; expected one of 'char', 'word', 'bpe'")


def load_tokenizer(path) -> Tokenizer:
    """Read any tokenizer written by ``save``."""
    try:
        state = json.loads(_read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file {path} not found") from None
    except ValueError as error:
        raise ValueError(f"{path} is not a tokenizer JSON file: {error}") from None
    return tokenizer_from_dict(state)
