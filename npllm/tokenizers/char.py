"""Character-level tokenizer: one token per character of the training text."""
from __future__ import annotations

from npllm.tokenizers.base import Tokenizer, _check_ids, _check_text, _check_training_text


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

    @classmethod
    def from_state(cls, state: dict) -> "CharTokenizer":
        return cls(state["chars"])
