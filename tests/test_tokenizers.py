"""Tokenizers: round trips, vocabularies, save/load, GPT-2's file format and ids, and clear errors."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npllm.tokenizers import (BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, bytes_to_unicode,
                              load_tokenizer, tokenizer_from_dict)

SAMPLE = ("The \"assert\" statement: assert x == 1, 'message'.\n\n"
          "    if __debug__:\n        if not expression: raise AssertionError\n"
          "Numbers 3.14 and 42; emoji 😀 and café.  The end, the end, the end.\n")


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(SAMPLE * 3, vocab_size=300)


# -- character ---------------------------------------------------------------------------------------
def test_char_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.train("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.vocab_size == 4
    assert tok.encode("hole") == [1, 3, 2, 0]


@given(st.text(min_size=1))
def test_char_round_trips_any_text_it_was_trained_on(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_character_is_named_in_the_error():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) is not in"):
        tok.encode("abz")


def test_char_vocab_size_is_an_upper_bound():
    assert CharTokenizer.train("abc", vocab_size=10).vocab_size == 3
    with pytest.raises(ValueError, match="3 distinct characters, more than vocab_size=2"):
        CharTokenizer.train("abc", vocab_size=2)


# -- word --------------------------------------------------------------------------------------------
def test_word_round_trips_text_whose_words_are_all_known():
    tok = WordTokenizer.train(SAMPLE)
    ids = tok.encode(SAMPLE)
    assert 0 not in ids
    assert tok.decode(ids) == SAMPLE


@given(st.text(min_size=1))
def test_word_round_trips_any_training_text(text):
    tok = WordTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text


def test_word_splits_words_punctuation_and_whitespace_runs():
    tok = WordTokenizer.train("hi, there  you")
    assert [tok.words[i] for i in tok.encode("hi, there  you")] == ["hi", ",", " ", "there", "  ", "you"]


def test_word_unknown_word_becomes_unk():
    tok = WordTokenizer.train("the cat sat")
    ids = tok.encode("the dog sat")
    assert ids[2] == 0
    assert tok.decode(ids) == "the <unk> sat"


def test_word_vocab_size_keeps_the_most_frequent_pieces():
    tok = WordTokenizer.train("a a a b b c", vocab_size=3)
    assert tok.words == ["<unk>", " ", "a"]         # " " occurs 5 times, "a" 3, "b" 2
    assert tok.encode("a b") == [2, 1, 0]
    with pytest.raises(ValueError, match="vocab_size must be >= 2"):
        WordTokenizer.train("a", vocab_size=1)


# -- byte-level BPE: training and round trips --------------------------------------------------------
def test_bpe_first_merge_is_the_most_frequent_pair():
    tok = BPETokenizer.train("abababab", vocab_size=257)
    assert tok.vocab_size == 257
    assert tok.vocab[256] == b"ab"
    assert tok.encode("abab") == [256, 256]
    assert tok.encode("ba") == [ord("b"), ord("a")]


def test_bpe_stops_when_no_pair_repeats():
    tok = BPETokenizer.train("abcabc", vocab_size=1000)
    assert tok.vocab[256:] == [b"ab", b"abc"]        # then every pair occurs once: nothing to learn


def test_bpe_merges_shorten_the_encoding(bpe):
    assert bpe.vocab_size == 300
    assert len(bpe.encode(SAMPLE)) < len(SAMPLE.encode("utf-8")) * 0.7


def test_bpe_training_is_deterministic(bpe):
    assert BPETokenizer.train(SAMPLE * 3, vocab_size=300) == bpe


@settings(max_examples=60)
@given(st.text())
def test_bpe_round_trips_any_unicode_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@pytest.mark.parametrize("text", ["", "😀🎉 non-BMP", "\x00\x01 control", "日本語のテキスト", "\r\n\t  \u2028"])
def test_bpe_round_trips_unseen_scripts_through_bytes(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_decode_of_a_split_character_uses_the_replacement_character(bpe):
    ids = bpe.encode("é")                            # two bytes: 0xC3 0xA9, unmerged in this vocab
    assert bpe.decode(ids[:1]) == "\ufffd"


def test_bpe_vocab_size_below_256_is_rejected():
    with pytest.raises(ValueError, match="vocab_size must be >= 256"):
        BPETokenizer.train("abc", vocab_size=100)


# -- save / load -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_save_then_load_gives_an_equal_tokenizer(tmp_path, cls):
    tok = cls.train(SAMPLE, vocab_size=None)
    tok.save(tmp_path / "tok.json")
    loaded = cls.load(tmp_path / "tok.json")
    assert loaded == tok
    assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)
    assert load_tokenizer(tmp_path / "tok.json") == tok
    assert Tokenizer.load(tmp_path / "tok.json") == tok
    state = json.loads((tmp_path / "tok.json").read_text(encoding="utf-8"))
    assert state["type"] == cls.type_name
    assert tokenizer_from_dict(state) == tok


def test_load_with_the_wrong_class_names_both_types(tmp_path):
    CharTokenizer.train("abc").save(tmp_path / "tok.json")
    with pytest.raises(ValueError, match="holds a 'char' tokenizer, not 'bpe'"):
        BPETokenizer.load(tmp_path / "tok.json")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ValueError, match="is not a tokenizer JSON file"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown tokenizer type 'sentencepiece'"):
        tokenizer_from_dict({"type": "sentencepiece"})
    with pytest.raises(ValueError, match="malformed 'bpe' tokenizer state: KeyError"):
        tokenizer_from_dict({"type": "bpe", "vocab": {}})
    with pytest.raises(ValueError, match="distinct characters"):
        tokenizer_from_dict({"type": "char", "chars": ["a", "bc"]})


def test_trained_bpe_round_trips_through_gpt2_files(tmp_path, bpe):
    bpe.save_pretrained(tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    loaded = BPETokenizer.from_pretrained(tmp_path)
    assert loaded == bpe
    assert loaded.encode(SAMPLE) == bpe.encode(SAMPLE)


# -- GPT-2's format, with a hand-made vocabulary ------------------------------------------------------
def write_tiny_gpt2(directory, merges=("h e", "l l", "he ll", "Ġ w", "o r", "Ġw or")):
    """256 byte tokens in GPT-2's order, the merges (by default six), and <|endoftext|>."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    for line in merges:
        vocab["".join(line.split())] = len(vocab)   # he 256, ll 257, hell 258, Ġw 259, or 260, Ġwor 261
    vocab["<|endoftext|>"] = len(vocab)             # 262
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def test_bytes_to_unicode_matches_gpt2_ids_for_space_and_newline(tmp_path):
    write_tiny_gpt2(tmp_path)
    tok = BPETokenizer.from_pretrained(tmp_path)
    # GPT-2's own ids: "!" is 0, " " is 220 ("Ġ"), "\n" is 198 ("Ċ").
    assert tok.encode("! \n") == [0, 220, 198]
    assert bytes_to_unicode()[ord(" ")] == "Ġ"


def test_from_pretrained_applies_merges_by_rank_like_gpt2(tmp_path):
    write_tiny_gpt2(tmp_path)
    tok = BPETokenizer.from_pretrained(tmp_path)
    assert tok.vocab_size == 263
    # "hello":  h e l l o -> he l l o -> he ll o -> hell o
    # " world": Ġ w o r l d -> Ġw o r l d -> Ġw or l d -> Ġwor l d
    # Byte ids: printable ASCII c has id ord(c) - 33, so o = 78, l = 75, d = 67.
    assert tok.encode("hello world") == [258, 78, 261, 75, 67]
    assert tok.decode([258, 78, 261, 75, 67]) == "hello world"


@pytest.mark.parametrize("merges, text, expected", [
    (["e l", "l l"], "ell", ["el", "l"]),          # the lower-rank merge wins ...
    (["l l", "e l"], "ell", ["e", "ll"]),          # ... whichever it is
    (["l l"], "lllll", ["ll", "ll", "l"]),         # occurrences merge left to right, without overlap
])
def test_from_pretrained_merges_by_rank_left_to_right(tmp_path, merges, text, expected):
    write_tiny_gpt2(tmp_path, merges)
    tok = BPETokenizer.from_pretrained(tmp_path)
    assert [tok.vocab[i] for i in tok.encode(text)] == [piece.encode() for piece in expected]


def test_from_pretrained_matches_special_tokens_whole(tmp_path):
    write_tiny_gpt2(tmp_path)
    tok = BPETokenizer.from_pretrained(tmp_path)
    assert tok.encode("he<|endoftext|>he") == [256, 262, 256]
    assert tok.decode([262]) == "<|endoftext|>"


def test_from_pretrained_then_save_pretrained_writes_the_same_files(tmp_path):
    write_tiny_gpt2(tmp_path)
    out = tmp_path / "copy"
    BPETokenizer.from_pretrained(tmp_path).save_pretrained(out)
    assert json.loads((out / "vocab.json").read_text(encoding="utf-8")) == \
        json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    merges = (out / "merges.txt").read_text(encoding="utf-8")
    assert merges == (tmp_path / "merges.txt").read_text(encoding="utf-8")


def test_from_pretrained_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json not found"):
        BPETokenizer.from_pretrained(tmp_path)


def test_from_pretrained_rejects_a_merge_of_unknown_tokens(tmp_path):
    write_tiny_gpt2(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\nx yz\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merge 2 'x yz'"):
        BPETokenizer.from_pretrained(tmp_path)


# -- errors common to all three -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_training_on_empty_text_is_an_error(cls):
    with pytest.raises(ValueError, match="empty text"):
        cls.train("")


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_decode_rejects_ids_out_of_range(cls):
    tok = cls.train(SAMPLE)
    with pytest.raises(ValueError, match=f"token id {tok.vocab_size} is out of range"):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.decode(np.array([-1]))
    with pytest.raises(TypeError, match="1-D sequence of ints"):
        tok.decode([0.5])


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_encode_requires_a_string(cls):
    with pytest.raises(TypeError, match="text must be a str"):
        cls.train(SAMPLE).encode(b"bytes")


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_decode_accepts_numpy_arrays(cls):
    tok = cls.train(SAMPLE)
    assert tok.decode(np.asarray(tok.encode("The end"), dtype=np.int64)) == "The end"
    assert tok.decode([]) == ""


# -- files: one atomic writer, one clear error per malformed file ---------------------------------------
def test_save_is_atomic_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import npllm.checkpoint as checkpoint
    from npllm.errors import CheckpointWriteError
    path = tmp_path / "tok.json"
    CharTokenizer.train("abc").save(path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(CheckpointWriteError, match="cannot write .*tok.json: No space left on device"):
        CharTokenizer.train("xyz").save(path)
    with pytest.raises(CheckpointWriteError, match="cannot write .*vocab.json"):
        BPETokenizer.train(SAMPLE, vocab_size=260).save_pretrained(tmp_path / "hf")
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["hf", "tok.json"]
    assert list((tmp_path / "hf").iterdir()) == []


def test_non_utf8_tokenizer_files_are_named(tmp_path):
    from npllm.errors import CheckpointError
    from tiny_gpt2 import write_tiny_gpt2
    write_tiny_gpt2(tmp_path)
    (tmp_path / "merges.txt").write_bytes(b"#version: 0.2\nh \xff\n")
    with pytest.raises(CheckpointError, match=r"merges.txt: not UTF-8 text \(invalid byte at offset 16\)"):
        BPETokenizer.from_pretrained(tmp_path)
    (tmp_path / "tok.json").write_bytes(b'{"type": "char", "chars": ["\xff"]}')
    with pytest.raises(ValueError, match="tok.json is not a tokenizer JSON file: .*not UTF-8"):
        load_tokenizer(tmp_path / "tok.json")


def test_a_stored_bpe_vocab_that_is_not_an_object_is_named():
    with pytest.raises(ValueError, match="tokenizer vocab: expected a JSON object mapping token text to id"):
        tokenizer_from_dict({"type": "bpe", "vocab": ["a", "b"], "merges": []})
