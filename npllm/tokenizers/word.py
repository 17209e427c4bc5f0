"""Word-level tokenizer: words, numbers, punctuation and whitespace runs, with ``<unk>`` for the rest."""
from __future__ import annotations

from collections import Counter

import regex

from npllm.tokenizers.base import Tokenizer, _check_ids, _check_text, _check_training_text

# Words/numbers, single punctuation marks, and whitespace runs, so the pieces cover every character and
# joining them gives the text back.
WORD_SPLIT_PATTERN = regex.compile(r"\w+|\s+|[^\w\s]")
UNK_TOKEN = "<unk>"


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

    @classmethod
    def from_state(cls, state: dict) -> "WordTokenizer":
        return cls(state["words"])
