"""Tokenizers: text ↔ integer ids.  Character, word (with ``<unk>``) and byte-level BPE (GPT-2).

All three share one interface: ``Tok.train(text, vocab_size=None)``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``vocab_size``, ``save(path)`` / ``Tok.load(path)`` (JSON with a ``"type"``
field), ``to_dict()``; :func:`tokenizer_from_dict` and :func:`load_tokenizer` rebuild any of them.

Byte-level BPE follows Sennrich et al. (2016), "Neural Machine Translation of Rare Words with Subword
Units", as GPT-2 applies it (Radford et al., 2019): text is split into chunks by a regex, each chunk's
UTF-8 bytes start as 256 byte tokens, and learned merges are applied lowest rank first.  Because every
byte is a token, any string round-trips exactly.  :meth:`BPETokenizer.from_pretrained` reads a Hugging
Face ``tokenizer.json`` (any byte-level BPE: GPT-2, Llama 3, Qwen2; npllm/tokenizers/hf_json.py) or GPT-2's
``vocab.json`` + ``merges.txt``, and gives the same ids as the ``tokenizers`` library (and OpenAI's
``encoder.py``).  Special tokens are matched whole before anything else, in training too
(``BPETokenizer.train(text, vocab_size, special_tokens=[...])``); ``encode_iterable(lines)`` streams a
large file's ids in bounded memory.
"""
from npllm.tokenizers.base import Tokenizer, load_tokenizer, tokenizer_from_dict
from npllm.tokenizers.bpe import BPETokenizer, bytes_to_unicode
from npllm.tokenizers.char import CharTokenizer
from npllm.tokenizers.word import WordTokenizer

__all__ = ["Tokenizer", "CharTokenizer", "WordTokenizer", "BPETokenizer", "bytes_to_unicode", "tokenizer_from_dict",
           "load_tokenizer"]
