"""Data: the built-in corpus, reading text files, the train/val split and batch sampling."""
import os
import re

import numpy as np
import pytest

from npllm.data import (MAX_TEXT_BYTES, builtin_corpus, check_corpus, check_splits, encode_corpus, get_batch, load_text,
                        sequential_batches, train_val_split)
from npllm.tokenizers import CharTokenizer


# -- built-in corpus ----------------------------------------------------------------------------------
def test_builtin_corpus_is_python_documentation_and_large_enough():
    text = builtin_corpus()
    assert len(text) > 100_000
    assert 'The "assert" statement' in text
    assert len(set(text)) < 128                 # a small character vocabulary


def test_builtin_corpus_is_deterministic():
    first = builtin_corpus()
    builtin_corpus.cache_clear()
    assert builtin_corpus() == first
    assert builtin_corpus() is builtin_corpus()  # cached


def test_builtin_corpus_is_clean_plain_text():
    text = builtin_corpus()
    assert not re.search(r"[ \t]$", text, re.MULTILINE), "trailing whitespace"
    assert "\n\n\n" not in text
    assert not re.search(r"^(\*{3,}|={3,})$", text, re.MULTILINE), "reST heading underlines"
    assert "**PEP" not in text and "\u2019" not in text
    assert text.endswith("\n") and not text.startswith("\n")


# -- load_text ----------------------------------------------------------------------------------------
def test_load_text_reads_utf8_dropping_bom_and_crlf(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffcafé 😀\r\nline two\n".encode("utf-8"))
    assert load_text(path) == "café 😀\nline two\n"


def test_load_text_missing_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.txt does not exist"):
        load_text(tmp_path / "nope.txt")


def test_load_text_rejects_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_text(tmp_path)


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b" \n\n\t", "only whitespace")])
def test_load_text_rejects_empty_files(tmp_path, content, message):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_text(path)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "caf\xe9".encode("latin-1"),
                                     "utf-16 text".encode("utf-16")])
def test_load_text_rejects_binary_and_other_encodings(tmp_path, content):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"data\.bin is not a UTF-8 text file"):
        load_text(path)


@pytest.mark.parametrize("make, words", [
    (lambda tmp: "/dev/zero", "is a character device, not a regular text file"),
    (lambda tmp: (os.mkfifo(tmp / "fifo"), tmp / "fifo")[1], r"is a FIFO \(named pipe\), not a regular text file"),
    (lambda tmp: (os.symlink(tmp / "b", tmp / "a"), os.symlink(tmp / "a", tmp / "b"), tmp / "a")[2],
     "too many levels of symbolic links"),
    (lambda tmp: (os.symlink(tmp / "gone", tmp / "dangling"), tmp / "dangling")[1],
     "does not exist .a broken symbolic link."),
])
def test_load_text_refuses_what_is_not_a_regular_file_without_reading_it(tmp_path, make, words):
    with pytest.raises(ValueError, match=words):
        load_text(make(tmp_path))       # a FIFO with no writer would block a plain open(): it must not


def test_load_text_checks_the_size_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        handle.truncate(MAX_TEXT_BYTES + 1)          # sparse: no disk used
    monkeypatch.setattr(os, "open", lambda *args: pytest.fail("the file was opened"))
    with pytest.raises(ValueError, match=f"big.txt is {MAX_TEXT_BYTES + 1:,} bytes, more than the limit of "
                                         f"{MAX_TEXT_BYTES:,} bytes"):
        load_text(path)
    monkeypatch.undo()
    (tmp_path / "small.txt").write_text("twelve bytes")
    with pytest.raises(ValueError, match="12 bytes, more than the limit of 5 bytes"):
        load_text(tmp_path / "small.txt", max_bytes=5)


@pytest.mark.parametrize("content", [b"SECRET-TOKEN \xff\xfe rest", b"SECRET-TOKEN\x00binary", "SECRET-TOKEN é".encode("latin-1")])
def test_load_text_errors_never_quote_the_file(tmp_path, content):
    path = tmp_path / "private.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_text(path)
    message = str(info.value)
    assert "private.txt" in message and "SECRET" not in message and "0xff" not in message and "0xe9" not in message


# -- encode and split ---------------------------------------------------------------------------------
def test_encode_corpus_gives_int64_ids():
    tok = CharTokenizer.train("abc")
    ids = encode_corpus("cab", tok)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [2, 0, 1])


def test_train_val_split_keeps_the_last_tenth_for_validation():
    train, val = train_val_split(np.arange(100))
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    train, val = train_val_split(list(range(10)), val_fraction=0.25)
    assert len(train) == 7 and len(val) == 3 and train.dtype == np.int64


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_train_val_split_rejects_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="val_fraction must be in"):
        train_val_split(np.arange(10), fraction)


def test_train_val_split_rejects_non_1d_or_float_ids():
    with pytest.raises(ValueError, match="1-D"):
        train_val_split(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        train_val_split(np.zeros(4))


# -- batches ------------------------------------------------------------------------------------------
def test_get_batch_shapes_dtypes_and_shift():
    data = np.arange(1000) * 7                  # distinct values, so a window identifies its start
    x, y = get_batch(data, batch_size=5, block_size=8, rng=np.random.default_rng(0))
    assert x.shape == y.shape == (5, 8)
    assert x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):
        start = row_x[0] // 7
        np.testing.assert_array_equal(row_x, data[start:start + 8])
        np.testing.assert_array_equal(row_y, data[start + 1:start + 9])


def test_get_batch_is_reproducible_from_the_seed():
    data = np.arange(500)
    first = get_batch(data, 4, 16, np.random.default_rng(3))
    second = get_batch(data, 4, 16, np.random.default_rng(3))
    np.testing.assert_array_equal(first[0], second[0])


def test_get_batch_with_exactly_one_window_uses_all_of_it():
    x, y = get_batch(np.arange(9), batch_size=3, block_size=8, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(x, np.tile(np.arange(8), (3, 1)))
    np.testing.assert_array_equal(y, np.tile(np.arange(1, 9), (3, 1)))


def test_get_batch_reaches_the_last_token():
    data = np.arange(20)
    _, y = get_batch(data, batch_size=200, block_size=4, rng=np.random.default_rng(0))
    assert y.max() == 19 and y.min() == 1


def test_get_batch_on_a_too_short_corpus_says_how_short():
    message = r"corpus of 8 tokens is shorter than one block of block_size\+1 = 9"
    with pytest.raises(ValueError, match=message):
        get_batch(np.arange(8), batch_size=2, block_size=8, rng=np.random.default_rng(0))


def test_check_splits_names_the_short_split():
    check_splits(np.arange(100), np.arange(20), block_size=16)
    with pytest.raises(ValueError, match="the validation split .* of 10 tokens"):
        check_splits(np.arange(100), np.arange(10), block_size=16)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        check_corpus(np.arange(10), 0)


def test_sequential_batches_cover_the_data_in_order():
    data = np.arange(50)
    batches = list(sequential_batches(data, batch_size=4, block_size=8))
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    assert [len(x) for x, _ in batches] == [4, 2]        # 6 full windows of 8 (+1) fit in 50 tokens
    np.testing.assert_array_equal(xs.ravel(), np.arange(48))
    np.testing.assert_array_equal(ys.ravel(), np.arange(1, 49))
