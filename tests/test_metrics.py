"""Metrics: corpus BLEU on cases computed by hand from Papineni et al. (2002), and the simple metrics."""
import math

import numpy as np
import pytest

from npllm.metrics import accuracy, bleu, char_accuracy, exact_match, perplexity


def _split(*texts):
    return [text.split() for text in texts]


def test_bleu_of_an_identical_corpus_is_100():
    hyps = _split("the cat sat on the mat", "a quick brown fox jumps over the dog")
    result = bleu(hyps, [[h] for h in hyps])
    assert result.score == pytest.approx(100.0)
    assert result.precisions == pytest.approx((100.0,) * 4) and result.brevity_penalty == 1.0


def test_bleu_is_0_without_a_shared_4gram():
    # Every word matches, so p1 = 1, but no four consecutive words appear in the reference.
    result = bleu(_split("mat the on sat cat the"), [_split("the cat sat on the mat")])
    assert result.precisions[0] == pytest.approx(100.0)
    assert result.matches[3] == 0 and result.score == 0.0


def test_bleu_brevity_penalty_of_a_short_hypothesis():
    # All n-grams of "the cat sat on" are in the reference (p_n = 1), but c = 4 < r = 6: BP = e^(1 - 6/4).
    result = bleu(_split("the cat sat on"), [_split("the cat sat on the mat")])
    assert result.brevity_penalty == pytest.approx(math.exp(-0.5))
    assert result.score == pytest.approx(100 * math.exp(-0.5))
    assert (result.hypothesis_length, result.reference_length) == (4, 6)


def test_bleu_clips_repeated_words_papineni_example():
    # Papineni et al. section 2.1: "the" x7 against two references; "the" occurs at most twice in one
    # reference, so the modified unigram precision is 2/7.  The closer reference length is 7: BP = 1.
    refs = [_split("the cat is on the mat", "there is a cat on the mat")]
    result = bleu(_split("the the the the the the the"), refs, max_n=1)
    assert result.matches == (2,) and result.totals == (7,)
    assert result.score == pytest.approx(100 * 2 / 7)


def test_bleu_sums_counts_over_the_corpus_before_dividing():
    # Sentence 1: unigrams 3/4, bigrams 2/3.  Sentence 2: unigrams 1/2, bigrams 0/1 (alone it scores 0).
    # Corpus: p1 = 4/6, p2 = 2/4, c = 6, r = 4 + 3 = 7.
    result = bleu(_split("a b c d", "x y"), [_split("a b c e"), _split("x z w")], max_n=2)
    expected = 100 * math.exp(1 - 7 / 6) * math.sqrt((4 / 6) * (2 / 4))
    assert result.score == pytest.approx(expected)
    assert result.matches == (4, 2) and result.totals == (6, 4)


def test_bleu_effective_reference_length_prefers_the_shorter_on_a_tie():
    # The hypothesis has 4 tokens; references of 3 and 5 are equally close: r = 3, so c > r and BP = 1.
    result = bleu(_split("a b c d"), [_split("a b c", "a b c d e")], max_n=1)
    assert result.reference_length == 3 and result.brevity_penalty == 1.0


def test_bleu_of_empty_hypotheses_is_0_and_prints_like_sacrebleu():
    result = bleu([[]], [_split("a b")])
    assert result.score == 0.0 and result.brevity_penalty == 0.0
    assert str(bleu(_split("a b c d"), [_split("a b c d")])).startswith("BLEU = 100.00 100.0/100.0/100.0/100.0")


@pytest.mark.parametrize("hyps, refs, error, words", [
    (["a b"], [[["a", "b"]]], TypeError, "hypotheses\\[0\\] must be a list of tokens"),
    ([["a"]], [["a", "b"]], TypeError, "references\\[0\\] must be a non-empty list of reference token lists"),
    ([["a"]], [], ValueError, "same length"),
])
def test_bleu_names_malformed_inputs(hyps, refs, error, words):
    with pytest.raises(error, match=words):
        bleu(hyps, refs)


def test_accuracy_skips_ignored_targets():
    predictions = np.array([[1, 2, 3], [4, 5, 6]])
    targets = np.array([[1, 0, 3], [4, -100, -100]])
    assert accuracy(predictions, targets) == pytest.approx(3 / 6)
    assert accuracy(predictions, targets, ignore_index=-100) == pytest.approx(3 / 4)


def test_exact_match_and_char_accuracy():
    hyps, refs = ["1995-09-03", "2001-01-0", "1999-12-31x"], ["1995-09-03", "2001-01-01", "1999-12-31"]
    assert exact_match(hyps, refs) == pytest.approx(1 / 3)
    # 10/10 + 9/10 (one missing) + 10/11 (one extra) = 29 / 31
    assert char_accuracy(hyps, refs) == pytest.approx(29 / 31)


def test_perplexity_is_exp_of_the_loss():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(65)) == pytest.approx(65)
    assert perplexity(1e4) == math.inf
