"""Evaluation metrics: perplexity, accuracy, exact match, character accuracy and corpus BLEU.

BLEU follows Papineni, Roukos, Ward & Zhu (2002), "BLEU: a Method for Automatic Evaluation of Machine
Translation", section 2, at the corpus level:
    p_n  = Σ_sentences Σ_ngrams min(count in hypothesis, max count in any reference)
           / Σ_sentences (number of n-grams in the hypothesis)                 (clipped n-gram precision)
    BP   = 1 if c > r else exp(1 − r / c)                                      (brevity penalty)
    BLEU = BP · exp(Σ_{n=1..N} (1/N) log p_n)
where c is the total hypothesis length and r the effective reference length: for each sentence, the
length of the reference closest to the hypothesis (the shorter one on a tie, as NIST's mteval and
sacrebleu do).  Counts are summed over the corpus before dividing, so BLEU is *not* the mean of
sentence scores.  No smoothing: if some p_n is 0 the score is 0.  Scores are reported on 0–100 and the
precisions in percent, as sacrebleu prints them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats), inf when that overflows."""
    loss = float(loss)
    return math.exp(loss) if loss < 700 else math.inf


def accuracy(predictions, targets, ignore_index: int | None = None) -> float:
    """Fraction of positions where predictions == targets (int arrays of one shape), skipping
    positions whose target is ``ignore_index``; 0.0 when no position is left."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions must have the targets' shape {targets.shape}, got {predictions.shape}")
    keep = np.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index
    n_kept = int(keep.sum())
    return float(np.sum((predictions == targets) & keep)) / n_kept if n_kept else 0.0


def _check_pairs(hypotheses, references, what: str) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{what}: hypotheses and references must have the same length, got "
                         f"{len(hypotheses)} and {len(references)}")
    if len(hypotheses) == 0:
        raise ValueError(f"{what}: expected at least one hypothesis, got none")


def exact_match(hypotheses: Sequence, references: Sequence) -> float:
    """Fraction of hypotheses equal to their reference (strings or token sequences)."""
    _check_pairs(hypotheses, references, "exact_match")
    return sum(list(h) == list(r) for h, r in zip(hypotheses, references)) / len(hypotheses)


def char_accuracy(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Position-wise character accuracy: Σ matching positions / Σ max(len(hyp), len(ref)).

    Dividing by the longer length counts a missing character and an extra one as one error each."""
    _check_pairs(hypotheses, references, "char_accuracy")
    correct = total = 0
    for hyp, ref in zip(hypotheses, references):
        correct += sum(a == b for a, b in zip(hyp, ref))
        total += max(len(hyp), len(ref))
    return correct / total if total else 1.0


@dataclass(frozen=True)
class BLEUScore:
    """Corpus BLEU and its parts: ``score`` (0–100), ``precisions`` p_1..p_N (percent), ``brevity_penalty``,
    ``hypothesis_length`` c, ``reference_length`` r, and the clipped ``matches`` / ``totals`` per order."""
    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int
    matches: tuple[int, ...]
    totals: tuple[int, ...]

    def __str__(self) -> str:
        ratio = self.hypothesis_length / self.reference_length if self.reference_length else 0.0
        return (f"BLEU = {self.score:.2f} {'/'.join(f'{p:.1f}' for p in self.precisions)} "
                f"(BP = {self.brevity_penalty:.3f} ratio = {ratio:.3f} hyp_len = {self.hypothesis_length} "
                f"ref_len = {self.reference_length})")


def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _check_bleu_inputs(hypotheses, references, max_n) -> None:
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive int, got {max_n!r}")
    _check_pairs(hypotheses, references, "bleu")
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        if isinstance(hyp, str):
            raise TypeError(f"hypotheses[{i}] must be a list of tokens, got a str (split it: text.split())")
        if isinstance(refs, str) or not refs or any(isinstance(ref, str) for ref in refs):
            raise TypeError(f"references[{i}] must be a non-empty list of reference token lists "
                            f"(for a single reference write [tokens]), got {refs!r:.80}")


def bleu(hypotheses: Sequence[Sequence], references: Sequence[Sequence[Sequence]], max_n: int = 4) -> BLEUScore:
    """Corpus BLEU (Papineni et al. 2002): hypotheses[i] is a token list, references[i] a list of one or
    more reference token lists for it → :class:`BLEUScore` with ``score`` on 0–100."""
    _check_bleu_inputs(hypotheses, references, max_n)
    matches, totals = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for hyp, refs in zip(hypotheses, references):
        hyp = list(hyp)
        hyp_length += len(hyp)
        # The reference closest in length to the hypothesis; min over (distance, length) prefers the shorter.
        ref_length += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
        for n in range(1, max_n + 1):
            hyp_counts = _ngrams(hyp, n)
            max_ref_counts: Counter = Counter()
            for ref in refs:
                max_ref_counts |= _ngrams(list(ref), n)        # | keeps the maximum count of each n-gram
            # Clipping: an n-gram is credited at most as often as it occurs in some single reference, so
            # "the the the the" does not score well against "the cat".
            matches[n - 1] += sum(min(count, max_ref_counts[gram]) for gram, count in hyp_counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = tuple(m / t if t else 0.0 for m, t in zip(matches, totals))
    if hyp_length == 0:
        brevity_penalty = 0.0
    else:
        brevity_penalty = 1.0 if hyp_length > ref_length else math.exp(1.0 - ref_length / hyp_length)
    if min(precisions) == 0.0:
        score = 0.0
    else:
        score = 100.0 * brevity_penalty * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return BLEUScore(score, tuple(100.0 * p for p in precisions), brevity_penalty, hyp_length, ref_length,
                     tuple(matches), tuple(totals))
