"""Byte-level BPE (Sennrich et al. 2016, as GPT-2 applies it): train, encode, decode, and Hugging Face's files.

Text is split into chunks by a regex, each chunk's UTF-8 bytes start as 256 byte tokens, and learned
merges are applied lowest rank first; since every byte is a token, any string round-trips exactly.
:meth:`BPETokenizer.from_pretrained` reads a ``tokenizer.json`` (:mod:`npllm.tokenizers.hf_json`) or
GPT-2's ``vocab.json`` + ``merges.txt`` and gives the ids the ``tokenizers`` library gives.
"""
from __future__ import annotations

import heapq
import json
import os
import unicodedata
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Iterator

import regex

from npllm.checkpoint import write_atomic
from npllm.errors import CheckpointError
from npllm.tokenizers import hf_json
from npllm.tokenizers.base import Tokenizer, _check_ids, _check_text, _check_training_text, _read_text
from npllm.tokenizers.hf_json import BEHAVIORS, GPT2_PATTERN, GPT2_PRE_TOKENIZER, NORMALIZATIONS

# GPT-2's pre-tokenisation: contractions, letters, numbers, other symbols (each optionally with one
# leading space), and whitespace.  Merges never cross a chunk boundary, so " the" and "the." stay apart.
GPT2_SPLIT_PATTERN = regex.compile(GPT2_PATTERN)
SPECIAL_TOKEN_PATTERN = regex.compile(r"<\|[^|\s]+\|>")
DEFAULT_BPE_VOCAB_SIZE = 512
# BPETokenizer.to_dict's optional keys (left out at their defaults, so GPT-2 style states stay as they were).
BPE_OPTIONS = ("special_tokens", "added_options", "pre_tokenizer", "normalizer", "ignore_merges", "template")
TOKENIZER_JSON = "tokenizer.json"       # Hugging Face's one-file tokenizer (hf_json.py)


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


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ``vocab`` maps id → bytes, ``merges`` maps a pair of ids → merged id by rank.

    Encoding is Hugging Face's pipeline for byte-level BPE (npllm/tokenizers/hf_json.py describes each
    stage): special (added) tokens are cut out whole and never split; each remaining piece is normalized
    (``normalizer``: None or "NFC", ...), pre-tokenized by ``pre_tokenizer``'s regex splits (default:
    GPT-2's), and each chunk's UTF-8 bytes are merged, lowest rank first (with ``ignore_merges`` a chunk
    that is itself a token is taken whole).  ``encode(text, add_special_tokens=True)`` also puts the
    ``template``'s ids around the result (Llama 3's <|begin_of_text|>), as ``tokenizers``' own default.
    """

    type_name = "bpe"

    def __init__(self, vocab: list[bytes], merges: list[tuple[int, int, int]],
                 byte_ids: list[int] | None = None, special_tokens: dict[str, int] | None = None, *,
                 pre_tokenizer: list[dict] | None = None, normalizer: str | None = None,
                 ignore_merges: bool = False, template: dict | None = None, added_options: dict | None = None):
        """``merges`` in rank order as (left id, right id, merged id); ``byte_ids[b]`` is byte b's id;
        ``special_tokens`` text → id; the keyword options as in tokenizer.json (see the class docstring)."""
        self.vocab = list(vocab)
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        self.merge_ranks = {(left, right): rank for rank, (left, right, _) in enumerate(merges)}
        self.merged_id = {(left, right): merged for left, right, merged in merges}
        self.merges = list(merges)
        self.special_tokens = dict(special_tokens or {})
        self.pre_tokenizer = [dict(step) for step in (GPT2_PRE_TOKENIZER if pre_tokenizer is None else pre_tokenizer)]
        self.normalizer, self.ignore_merges = normalizer, bool(ignore_merges)
        self.template = None if not template else {"prefix": list(template.get("prefix", [])),
                                                   "suffix": list(template.get("suffix", []))}
        self.added_options = {text: dict(flags) for text, flags in (added_options or {}).items()}
        if normalizer not in (None, *NORMALIZATIONS):
            raise ValueError(f"normalizer must be None or one of {NORMALIZATIONS}, got {normalizer!r}")
        if self.template and not all(isinstance(i, int) and 0 <= i < len(self.vocab)
                                     for i in self.template["prefix"] + self.template["suffix"]):
            raise ValueError(f"template ids must be token ids below {len(self.vocab)}, got {self.template}")
        unknown = sorted(set(self.added_options) - set(self.special_tokens))
        if unknown:
            raise ValueError(f"added_options name tokens that are not special tokens: {unknown[:3]}")
        self._steps = [(step, _compile_step(step)) for step in self.pre_tokenizer]
        # Special tokens are matched whole, longest first, before anything else (named groups say which).
        self._special_texts = sorted(self.special_tokens, key=len, reverse=True)
        self._special_pattern = (regex.compile("|".join(
            f"(?P<t{index}>{_added_token_regex(text, self.added_options.get(text, {}))})"
            for index, text in enumerate(self._special_texts))) if self.special_tokens else None)
        self._special_prefixes = {text[:k] for text in self.special_tokens for k in range(1, len(text))}
        self._longest_special = max(map(len, self.special_tokens), default=0)
        self._text_of_special = {i: text for text, i in self.special_tokens.items()}
        self._whole_tokens = None        # bytes → id, built on first use when ignore_merges
        self._cache: dict[str, list[int]] = {}

    # -- training ---------------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, vocab_size: int | None = None, special_tokens: list[str] | None = None) -> "BPETokenizer":
        """Learn merges on ``text`` until ``vocab_size`` tokens (default 512) or no pair repeats.

        ``special_tokens`` (e.g. ["<|endoftext|>"]) get the ids after the 256 bytes; in ``text`` they are
        cut out whole first, so no merge is learned across or inside one."""
        specials = list(special_tokens or [])
        if not all(isinstance(s, str) and s for s in specials) or len(set(specials)) != len(specials):
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {specials!r}")
        vocab_size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
        if vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size must be >= {256 + len(specials)} (one token per byte and per special "
                             f"token), got {vocab_size}")
        pieces = [_check_training_text(text)]
        if specials:
            pattern = regex.compile("|".join(map(regex.escape, sorted(specials, key=len, reverse=True))))
            pieces = pattern.split(text)
        chunk_counts = Counter(chunk for piece in pieces for chunk in GPT2_SPLIT_PATTERN.findall(piece))
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
        id_of = {token: i for i, token in enumerate(vocab)}      # special tokens left out: never a merge result
        vocab += [special.encode("utf-8") for special in specials]
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
        return cls(vocab, merges, special_tokens={special: 256 + i for i, special in enumerate(specials)})

    # -- encoding and decoding --------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE on one pre-tokenised chunk: repeatedly merge the adjacent pair of lowest rank."""
        data = chunk.encode("utf-8")
        if self.ignore_merges:                      # a chunk that is a token is that token (Llama 3)
            if self._whole_tokens is None:
                self._whole_tokens = {token: i for i, token in enumerate(self.vocab)
                                      if i not in self._text_of_special}
            whole = self._whole_tokens.get(data)
            if whole is not None:
                return [whole]
        ids = [self.byte_ids[byte] for byte in data]
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merge_ranks.get(p, float("inf")))
            if pair not in self.merge_ranks:
                break
            ids = _merge_pair(ids, pair, self.merged_id[pair])
        return ids

    def _split_special(self, text: str):
        """(piece, None) for ordinary text and (token text, id) for each special token, in order."""
        if self._special_pattern is None:
            yield text, None
            return
        position = 0
        for match in self._special_pattern.finditer(text):
            if match.start() > position:
                yield text[position:match.start()], None
            special = self._special_texts[int(match.lastgroup[1:])]
            yield match.group(), self.special_tokens[special]
            position = match.end()
        if position < len(text):
            yield text[position:], None

    def pre_tokenize(self, text: str, normalize: bool = True) -> list[str]:
        """The chunks BPE encodes one by one: ``text`` (no special tokens in it) normalized, then split."""
        if normalize and self.normalizer:
            text = unicodedata.normalize(self.normalizer, text)
        pieces = [text] if text else []
        for step, pattern in self._steps:
            if pattern is None:                     # ByteLevel's add_prefix_space, applied to every piece
                pieces = [piece if piece.startswith(" ") else " " + piece for piece in pieces]
            else:
                pieces = [part for piece in pieces for part in _split(piece, pattern, step["behavior"], step["invert"])]
        return pieces

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; any string works (unseen characters fall back to their bytes).  With
        ``add_special_tokens`` the template's ids go around them (``tokenizers``' default for encode)."""
        ids: list[int] = []
        for piece, special_id in self._split_special(_check_text(text)):
            if special_id is not None:
                ids.append(special_id)
                continue
            for chunk in self.pre_tokenize(piece):
                cached = self._cache.get(chunk)
                if cached is None:
                    if len(self._cache) > 200_000:  # bound memory on huge, varied inputs
                        self._cache.clear()
                    cached = self._cache[chunk] = self._encode_chunk(chunk)
                ids.extend(cached)
        if add_special_tokens and self.template:
            ids = self.template["prefix"] + ids + self.template["suffix"]
        return ids

    def encode_iterable(self, lines) -> Iterator[int]:
        """Ids of ``"".join(lines)`` (an iterable of str, such as an open text file), yielded one by one
        while holding about one line: each line is encoded up to its last chunk, which waits for the next
        line (a chunk such as a whitespace run or a special token may continue there)."""
        buffer = ""
        for line in lines:
            buffer += _check_text(line)
            stable = self._stable_length(buffer)
            if stable:
                yield from self.encode(buffer[:stable])
                buffer = buffer[stable:]
        if buffer:
            yield from self.encode(buffer)

    def _stable_length(self, text: str) -> int:
        """How much of ``text`` encodes the same whatever follows: up to the start of its last chunk."""
        if not text:
            return 0
        *_, (last, special_id) = self._split_special(text)
        start = len(text) - len(last)                   # the last piece (text or a special token) waits
        if special_id is None:
            chunks = self.pre_tokenize(last, normalize=False)
            if chunks and "".join(chunks) == last:      # length-preserving splits: only the last chunk waits
                start = len(text) - len(chunks[-1])
        for k in range(1, min(len(text), self._longest_special) + 1):
            if text[-k:] in self._special_prefixes:     # perhaps a special token cut in two
                start = min(start, len(text) - k)
        while 0 < start < len(text) and unicodedata.combining(text[start]):
            start -= 1                                  # a combining mark normalizes with the character before
        return start

    def decode(self, ids) -> str:
        """Join the tokens' bytes and decode UTF-8 (an incomplete character becomes U+FFFD, as in GPT-2)."""
        data = b"".join(self.vocab[i] for i in _check_ids(ids, self.vocab_size))
        return data.decode("utf-8", errors="replace")

    # -- GPT-2's file format: vocab.json (token text -> id) and merges.txt (one "left right" per rank) --
    def _token_text(self, token_id: int) -> str:
        special = self._text_of_special.get(token_id)
        if special is not None:
            return special
        byte_to_char = bytes_to_unicode()
        return "".join(byte_to_char[byte] for byte in self.vocab[token_id])

    def to_dict(self) -> dict:
        texts = [self._token_text(i) for i in range(self.vocab_size)]
        state = {"type": self.type_name, "vocab": {text: i for i, text in enumerate(texts)},
                 "merges": [f"{texts[left]} {texts[right]}" for left, right, _ in self.merges]}
        options = {"special_tokens": self.special_tokens, "added_options": self.added_options,
                   "pre_tokenizer": None if self.pre_tokenizer == GPT2_PRE_TOKENIZER else self.pre_tokenizer,
                   "normalizer": self.normalizer, "ignore_merges": self.ignore_merges, "template": self.template}
        state.update({key: value for key, value in options.items() if value})   # defaults left out
        return state

    @classmethod
    def from_vocab_and_merges(cls, vocab: dict[str, int], merges: list, special_tokens: dict[str, int] | None = None,
                              **options) -> "BPETokenizer":
        """Build from GPT-2's representation: token text → id, and merges in rank order (``"left right"``
        or ``(left, right)``).  ``special_tokens`` (text → id) are the tokens matched whole; every other
        token must be byte-level text.  None: tokens that neither a byte nor a merge makes are added text,
        special when written <|...|> (GPT-2's files).  ``options`` go to the constructor."""
        char_to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"vocab ids must be exactly 0..{len(vocab) - 1}")
        id_bytes: list[bytes | None] = [None] * len(vocab)
        for text, token_id in vocab.items():
            if all(char in char_to_byte for char in text) and text not in (special_tokens or {}):
                id_bytes[token_id] = bytes(char_to_byte[char] for char in text)
        missing_bytes = [byte for byte, char in bytes_to_unicode().items() if char not in vocab]
        if missing_bytes:
            raise ValueError(f"vocab lacks the byte token for byte {missing_bytes[0]}")
        byte_ids = [vocab[bytes_to_unicode()[byte]] for byte in range(256)]
        triples = []
        for rank, merge in enumerate(merges, 1):
            parts = merge.split(" ") if isinstance(merge, str) else list(merge)
            if len(parts) != 2 or not all(part in vocab for part in parts) or "".join(parts) not in vocab:
                raise ValueError(f"merge {rank} {merge!r} is not two tokens whose join is in vocab")
            triples.append((vocab[parts[0]], vocab[parts[1]], vocab["".join(parts)]))
        if special_tokens is None:
            reachable = set(byte_ids) | {merged for _, _, merged in triples}
            added = {text: i for text, i in vocab.items() if i not in reachable}
            special_tokens = {text: i for text, i in added.items() if SPECIAL_TOKEN_PATTERN.fullmatch(text)}
        else:
            wrong = [text for text, i in special_tokens.items() if vocab.get(text) != i]
            if wrong:
                raise ValueError(f"special token {wrong[0]!r} has id {special_tokens[wrong[0]]}, vocab another")
            # Tokens that are not byte-level text are added text too (matched as plain text, not whole).
            added = {**{text: i for text, i in vocab.items() if id_bytes[i] is None}, **special_tokens}
        for text, i in added.items():
            id_bytes[i] = text.encode("utf-8")
        if None in id_bytes:
            bad = next(text for text, i in vocab.items() if id_bytes[i] is None)
            raise ValueError(f"vocab token {bad!r} is not byte-level text and not a special token")
        return cls(id_bytes, triples, byte_ids=byte_ids, special_tokens=special_tokens, **options)

    @classmethod
    def from_pretrained(cls, path) -> "BPETokenizer":
        """Read a Hugging Face tokenizer directory ``path``: its ``tokenizer.json`` when there is one (any
        byte-level BPE: GPT-2, Llama 3, Qwen2, ...), else GPT-2's ``vocab.json`` and ``merges.txt``.

        A missing file is a FileNotFoundError; a malformed or unsupported one a CheckpointError naming it."""
        if os.path.isfile(os.path.join(path, TOKENIZER_JSON)):
            return cls.from_tokenizer_json(os.path.join(path, TOKENIZER_JSON))
        vocab_path, merges_path = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        for needed in (vocab_path, merges_path):
            if not os.path.isfile(needed):
                raise FileNotFoundError(f"{needed} not found: a tokenizer directory needs {TOKENIZER_JSON}, "
                                        "or vocab.json and merges.txt")
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

    @classmethod
    def from_tokenizer_json(cls, path) -> "BPETokenizer":
        """Read a Hugging Face ``tokenizer.json`` file (byte-level BPE; npllm/tokenizers/hf_json.py lists what
        it reads and refuses); encode then gives the ids ``tokenizers`` gives for any text."""
        try:
            document = json.loads(_read_text(path))
        except ValueError as error:
            raise CheckpointError(f"{path}: not JSON: {error}") from None
        options = hf_json.parse(document, str(path))
        _check_vocab(options["vocab"], f"{path}: model.vocab")
        try:
            return cls.from_vocab_and_merges(options.pop("vocab"), options.pop("merges"), **options)
        except (ValueError, regex.error) as error:
            raise CheckpointError(f"{path}: {error}") from None

    def save_pretrained(self, path) -> None:
        """Write ``tokenizer.json`` and GPT-2's ``vocab.json`` + ``merges.txt`` into directory ``path``
        (created if needed), each atomically."""
        os.makedirs(path, exist_ok=True)
        state = self.to_dict()
        document = hf_json.build(state["vocab"], [tuple(m.split(" ")) for m in state["merges"]],
                                        self.special_tokens, self.added_options, self.pre_tokenizer,
                                        self.normalizer, self.ignore_merges, self.template)
        write_atomic(os.path.join(path, "vocab.json"), json.dumps(state["vocab"], ensure_ascii=False).encode("utf-8"))
        merges = "#version: 0.2\n" + "".join(line + "\n" for line in state["merges"])
        write_atomic(os.path.join(path, "merges.txt"), merges.encode("utf-8"))
        write_atomic(os.path.join(path, TOKENIZER_JSON),
                     json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8"))

    @classmethod
    def from_state(cls, state: dict) -> "BPETokenizer":
        _check_vocab(state["vocab"], "tokenizer vocab")
        options = {key: state[key] for key in BPE_OPTIONS if key in state}
        return cls.from_vocab_and_merges(state["vocab"], state["merges"], **options)


def _compile_step(step: dict):
    """A pre-tokenizer step's compiled regex (None for prefix_space); ValueError naming a bad one."""
    if not isinstance(step, dict) or step.get("type") not in ("split", "prefix_space"):
        raise ValueError(f"pre_tokenizer steps must be {{'type': 'split' | 'prefix_space', ...}}, got {step!r}")
    if step["type"] == "prefix_space":
        return None
    if step.get("behavior") not in BEHAVIORS.values() or not isinstance(step.get("invert"), bool):
        raise ValueError(f"pre_tokenizer split: behavior must be one of {sorted(BEHAVIORS.values())} and invert "
                         f"a bool, got {step.get('behavior')!r}, {step.get('invert')!r}")
    try:
        return regex.compile(step["pattern"])
    except (regex.error, TypeError) as error:
        raise ValueError(f"pre_tokenizer pattern {str(step.get('pattern'))[:60]!r} is not a valid regex: "
                         f"{error}") from None


def _added_token_regex(text: str, flags: dict) -> str:
    """The regex matching an added token whole, with tokenizers' lstrip/rstrip (absorb the whitespace
    beside it) and single_word (not inside a word)."""
    core = regex.escape(text)
    if flags.get("single_word"):
        core = r"(?<!\w)" + core + r"(?!\w)"
    return (r"\s*" if flags.get("lstrip") else "") + core + (r"\s*" if flags.get("rstrip") else "")


def _split(text: str, pattern, behavior: str, invert: bool) -> list[str]:
    """tokenizers' Split: cut ``text`` at the matches of ``pattern`` (non-matches with ``invert``) and keep
    the matches as pieces (isolated), drop them (removed), or join them to the piece before or after, or
    to each other (contiguous)."""
    parts, position = [], 0                          # (piece, is a match)
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if start > position:
            parts.append((text[position:start], invert))
        parts.append((text[start:end], not invert))
        position = end
    if position < len(text):
        parts.append((text[position:], invert))
    if behavior == "isolated":
        return [piece for piece, _ in parts]
    if behavior == "removed":
        return [piece for piece, is_match in parts if not is_match]
    if behavior == "merged_with_next":
        parts.reverse()
    out, neighbour_matched = [], False
    for piece, is_match in parts:
        if behavior == "contiguous":
            joins = is_match and neighbour_matched
        else:
            joins = is_match and not neighbour_matched
        if joins and out:
            out[-1] = out[-1] + piece if behavior != "merged_with_next" else piece + out[-1]
        else:
            out.append(piece)
        neighbour_matched = is_match
    return out[::-1] if behavior == "merged_with_next" else out


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
