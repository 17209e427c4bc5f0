"""Hugging Face tokenizer.json (byte-level BPE): ids as the ``tokenizers`` library gives them, worked out
by hand from its documented pipeline (added tokens whole, normalizer, pre-tokenizer splits, BPE with
ignore_merges, post-processor template); special tokens in training; streaming encode_iterable."""
import json

import pytest
from tiny_gpt2 import write_tiny_gpt2
from tiny_llama import SPECIAL, tokenizer_json

from npllm.errors import CheckpointError
from npllm.tokenizers import BPETokenizer, bytes_to_unicode, tokenizer_from_dict

# Llama 3's and Qwen2's pre-tokenisation regexes, as their tokenizer.json files give them.
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")
BYTE = {byte: i for i, byte in enumerate(bytes_to_unicode())}       # byte → id in the tiny vocabulary


def load(tmp_path, document, name="tokenizer.json") -> BPETokenizer:
    (tmp_path / name).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return BPETokenizer.from_tokenizer_json(tmp_path / name)


def ids_of(tokenizer, *tokens) -> list[int]:
    texts = {tokenizer._token_text(i): i for i in range(tokenizer.vocab_size)}
    return [texts[token] for token in tokens]


def test_llama3_regex_chunks_as_worked_out_by_hand(tmp_path):
    tokenizer = load(tmp_path, tokenizer_json(LLAMA3))
    # \p{N}{1,3} groups digits by three; a space before digits stands alone; "'M" is a contraction in any
    # case; of two spaces before a word the first stands alone (\s+(?!\S)); punctuation takes the newlines.
    assert tokenizer.pre_tokenize("Hello world 12345 I'M  ok!\n\n") == [
        "Hello", " world", " ", "123", "45", " I", "'M", " ", " ok", "!\n\n"]
    assert tokenizer.pre_tokenize("x\n\n  y") == ["x", "\n\n", " ", " y"]
    qwen2 = load(tmp_path, tokenizer_json(QWEN2))
    assert qwen2.pre_tokenize("in 2024,") == ["in", " ", "2", "0", "2", "4", ","]      # Qwen2: one digit each


def test_bpe_ids_follow_the_merge_ranks(tmp_path):
    tokenizer = load(tmp_path, tokenizer_json(LLAMA3))
    # " the": Ġ t → Ġt (rank 0), h e → he (1), Ġt he → Ġthe (2).  " an": a n (rank 3) merges before Ġ a (4),
    # so "Ġa n" (5) never applies: Ġ + an.
    assert tokenizer.encode(" the an") == ids_of(tokenizer, "Ġthe", "Ġ", "an")
    assert tokenizer.encode("hello") == ids_of(tokenizer, "he", "l", "l", "o")
    assert tokenizer.decode(tokenizer.encode("héllo wörld 😀\n")) == "héllo wörld 😀\n"


def test_ignore_merges_takes_a_chunk_that_is_a_token_whole(tmp_path):
    document = tokenizer_json(LLAMA3)
    document["model"]["ignore_merges"] = True
    tokenizer = load(tmp_path, document)
    assert tokenizer.encode(" an") == ids_of(tokenizer, "Ġan")               # in the vocabulary: one token
    assert tokenizer.encode(" ant") == ids_of(tokenizer, "Ġ", "an", "t")      # not: merges as usual


def test_merges_in_string_and_pair_form_give_the_same_tokenizer(tmp_path):
    pairs = load(tmp_path, tokenizer_json(LLAMA3), "pairs.json")
    strings = load(tmp_path, tokenizer_json(LLAMA3, merges_as_strings=True), "strings.json")
    assert pairs == strings and pairs.encode(" the an then") == strings.encode(" the an then")


def test_bytelevel_use_regex_is_gpt2s_tokenizer(tmp_path):
    write_tiny_gpt2(tmp_path / "gpt2")
    gpt2 = BPETokenizer.from_pretrained(tmp_path / "gpt2")          # vocab.json + merges.txt
    document = tokenizer_json()                                    # ByteLevel(use_regex=true)
    tokenizer = load(tmp_path, document)
    for text in (" the an", "Hello world 12345 I'M  ok!\n\n", "x\n\n  y", "it's 3.14 — ok"):
        assert [tokenizer._token_text(i) for i in tokenizer.encode(text)] == \
               [gpt2._token_text(i) for i in gpt2.encode(text)], text
    assert tokenizer.pre_tokenize("12345 I'M") == ["12345", " I", "'", "M"]  # GPT-2: case-sensitive 's only


def test_added_tokens_are_matched_whole_before_pre_tokenisation(tmp_path):
    tokenizer = load(tmp_path, tokenizer_json(LLAMA3))
    begin, end = 262, 263
    assert tokenizer.special_tokens == {SPECIAL[0]: begin, SPECIAL[1]: end}
    assert tokenizer.encode(f"{SPECIAL[0]}hello{SPECIAL[1]} the") == [begin, *ids_of(tokenizer, "he", "l", "l", "o"),
                                                                      end, *ids_of(tokenizer, "Ġthe")]
    assert end not in tokenizer.encode("<|end_of_text|")                      # a partial one is plain text
    assert tokenizer.decode([begin, *tokenizer.encode("hi")]) == SPECIAL[0] + "hi"


def test_lstrip_and_rstrip_absorb_the_whitespace_beside_an_added_token(tmp_path):
    document = tokenizer_json(LLAMA3)
    document["added_tokens"][1].update(lstrip=True, rstrip=True)
    tokenizer = load(tmp_path, document)
    assert tokenizer.encode(f"he {SPECIAL[1]}  he") == ids_of(tokenizer, "he") + [263] + ids_of(tokenizer, "he")
    assert tokenizer.encode(f"he {SPECIAL[0]} he") == ids_of(tokenizer, "he", "Ġ") + [262] + ids_of(tokenizer, "Ġ", "he")


def test_the_template_adds_the_begin_token_when_asked(tmp_path):
    document = tokenizer_json(LLAMA3)
    document["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": SPECIAL[0], "type_id": 0}},
                                                  {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {SPECIAL[0]: {"id": SPECIAL[0], "ids": [262], "tokens": [SPECIAL[0]]}}}]}
    tokenizer = load(tmp_path, document)
    assert tokenizer.encode("he", add_special_tokens=True) == [262] + tokenizer.encode("he")
    assert tokenizer.encode("he") == ids_of(tokenizer, "he")                  # npllm's default: the text only


def test_nfc_normalizer_composes_before_encoding(tmp_path):
    document = tokenizer_json(QWEN2)
    document["normalizer"] = {"type": "NFC"}
    tokenizer = load(tmp_path, document)
    assert tokenizer.encode("cafe\u0301") == tokenizer.encode("café") == [BYTE[c] for c in "caf".encode()] + \
        [BYTE[0xC3], BYTE[0xA9]]


@pytest.mark.parametrize("behavior, pieces", [
    ("Isolated", ["the", "-", "final", "-", "-", "countdown"]),
    ("Removed", ["the", "final", "countdown"]),
    ("MergedWithPrevious", ["the-", "final-", "-", "countdown"]),
    ("MergedWithNext", ["the", "-final", "-", "-countdown"]),
    ("Contiguous", ["the", "-", "final", "--", "countdown"]),
])
def test_split_behaviors_follow_the_tokenizers_documentation(tmp_path, behavior, pieces):
    document = tokenizer_json()
    document["pre_tokenizer"] = {"type": "Split", "pattern": {"String": "-"}, "behavior": behavior, "invert": False}
    assert load(tmp_path, document).pre_tokenize("the-final--countdown") == pieces


def test_add_prefix_space_and_digits(tmp_path):
    document = tokenizer_json()
    document["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
    # ByteLevel prefixes every piece Digits made, then GPT-2's regex keeps " 1" together.
    assert load(tmp_path, document).pre_tokenize("ab12") == [" ab", " 1", " 2"]


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["model"].update(type="WordPiece"), "unsupported model.type 'WordPiece'"),
    (lambda d: d["model"].update(byte_fallback=True), "unsupported model.byte_fallback"),
    (lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁"}), "unsupported pre_tokenizer.type 'Metaspace'"),
    (lambda d: d.update(normalizer={"type": "Replace"}), "unsupported normalizer.type 'Replace'"),
    (lambda d: d["model"]["merges"].append(["Ġ", "t", "h"]), r"model.merges\[6\] must be"),
    (lambda d: d["added_tokens"][0].update(id=5), "added token '<\\|begin_of_text\\|>' has id 5, which model.vocab gives"),
    (lambda d: d["model"]["vocab"].update(zz=d["model"]["vocab"].pop("Ġ")), "lacks the byte token for byte 32"),
    (lambda d: d.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}),
     "is not a valid regex"),
])
def test_what_npllm_cannot_read_is_one_error_naming_the_field(tmp_path, edit, words):
    document = tokenizer_json(LLAMA3)
    edit(document)
    with pytest.raises(CheckpointError, match=words):
        load(tmp_path, document)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json: not JSON"):
        BPETokenizer.from_tokenizer_json(tmp_path / "bad.json")


def test_save_pretrained_writes_a_tokenizer_json_that_reads_back_the_same(tmp_path):
    document = tokenizer_json(LLAMA3)
    document["model"]["ignore_merges"] = True
    document["normalizer"] = {"type": "NFC"}
    document["added_tokens"][1]["rstrip"] = True
    document["post_processor"] = {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": SPECIAL[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}
    tokenizer = load(tmp_path, document)
    tokenizer.save_pretrained(tmp_path / "one")
    again = BPETokenizer.from_pretrained(tmp_path / "one")          # tokenizer.json preferred to vocab.json
    assert again == tokenizer and tokenizer_from_dict(tokenizer.to_dict()) == tokenizer
    text = f"{SPECIAL[1]}  the an 12345 cafe\u0301\n\n"
    assert again.encode(text, add_special_tokens=True) == tokenizer.encode(text, add_special_tokens=True)
    assert tokenizer_from_dict(tokenizer.to_dict()).encode(text) == tokenizer.encode(text)
    again.save_pretrained(tmp_path / "two")
    assert (tmp_path / "one" / "tokenizer.json").read_bytes() == (tmp_path / "two" / "tokenizer.json").read_bytes()


def test_training_keeps_special_tokens_whole_and_never_merges_across_them():
    text = "ab<|endoftext|>ab<|endoftext|>cd ab ab<|endoftext|>" * 50
    tokenizer = BPETokenizer.train(text, vocab_size=280, special_tokens=["<|endoftext|>", "<pad>"])
    assert tokenizer.special_tokens == {"<|endoftext|>": 256, "<pad>": 257}
    assert tokenizer.vocab_size <= 280 and len(tokenizer.merges) > 0
    learned = [tokenizer.vocab[merged] for _, _, merged in tokenizer.merges]
    assert all(b"<|" not in token and b"|>" not in token for token in learned)    # nothing of the special text
    ids = tokenizer.encode(text)
    assert ids.count(256) == 150 and tokenizer.decode(ids) == text
    assert tokenizer_from_dict(tokenizer.to_dict()).encode("x<pad>y") == tokenizer.encode("x<pad>y")
    with pytest.raises(ValueError, match="vocab_size must be >= 258"):
        BPETokenizer.train(text, vocab_size=257, special_tokens=["<|endoftext|>", "<pad>"])


@pytest.mark.parametrize("pattern", [None, LLAMA3])
def test_encode_iterable_gives_encodes_ids_line_by_line(tmp_path, pattern):
    tokenizer = load(tmp_path, tokenizer_json(pattern))
    lines = ["The end  \n", "\n", "  \n", "then an 12345", "67 x", "<|end_of", "_text|> the\n", "cafe", "\u0301 ok\n", "a"]
    text = "".join(lines)
    assert list(tokenizer.encode_iterable(lines)) == tokenizer.encode(text)
    assert list(tokenizer.encode_iterable(iter(text))) == tokenizer.encode(text)     # one character at a time


def test_encode_iterable_streams_in_bounded_memory(tmp_path):
    tokenizer = load(tmp_path, tokenizer_json(LLAMA3))
    consumed = []

    def lines():
        for index in range(100_000):
            consumed.append(index)
            yield f"the an line {index}\n"

    stream = tokenizer.encode_iterable(lines())
    first = next(stream)
    assert first == ids_of(tokenizer, "t")[0] and len(consumed) <= 2     # ids flow before the input ends
    rest = sum(1 for _ in stream)
    assert len(consumed) == 100_000 and rest > 100_000


def test_a_gpt2_vocabulary_with_added_text_round_trips_through_the_checkpoint_state():
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab.update({"hello world": 256, "<|endoftext|>": 257})            # added text, then a special token
    tokenizer = BPETokenizer.from_vocab_and_merges(vocab, [])
    assert tokenizer.special_tokens == {"<|endoftext|>": 257}
    restored = tokenizer_from_dict(tokenizer.to_dict())
    assert restored == tokenizer and restored.decode([256, 257]) == "hello world<|endoftext|>"
