"""BLEU of a policy's best-of-k generation against the best reference response, two ways.

* :func:`corpus_bleu` - sacrebleu corpus BLEU (0-100, 13a tokenisation, no smoothing): the standard,
  shareable number (HPS_METHOD.md section 7). Corpus BLEU is not a mean of per-prompt values, so its
  bootstrap interval resamples prompts and recomputes the corpus score from summed n-gram statistics
  (:func:`corpus_bleu_with_ci`).
* :func:`char_sentence_bleu` - the reference HPS code's number (``eval/eval_score.py`` of LVLab-SMU/HPS:
  ``nltk.translate.bleu_score.sentence_bleu([ref], hyp)`` called on two *strings*, so the "tokens" are
  characters, spaces included; 0-1). Reimplemented here with nltk's exact semantics so results compare with
  the paper without an nltk dependency: clipped n-gram precisions for n = 1..4 with denominator
  ``max(1, hypothesis n-grams)``, uniform weights, nltk's default ``method0`` smoothing (a zero precision
  becomes ``sys.float_info.min``, so the score is ~1e-77 rather than exactly 0), 0 when no character
  matches, brevity penalty ``exp(1 - r / c)`` when the hypothesis is not longer than the reference.
  Both strings are stripped first, as the reference code does. It is averaged over prompts.
"""

from __future__ import annotations

import math
import sys
from collections import Counter

import numpy as np

MAX_ORDER = 4


def _sacrebleu():
    from sacrebleu.metrics import BLEU

    return BLEU()


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (0-100) of ``hypotheses`` against one reference each."""
    if not hypotheses:
        return float("nan")
    return float(_sacrebleu().corpus_score(hypotheses, [references]).score)


def bleu_statistics(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Per-sentence sufficient statistics, one row each: hyp_len, ref_len, correct_1..4, total_1..4.

    Summing rows over any subset of sentences and passing the sum to :func:`bleu_from_statistics` gives
    the corpus BLEU of that subset (tests check it equals ``corpus_bleu`` on the full set).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    # sacrebleu has no public per-sentence statistics API; this one has been stable across 2.x.
    return np.asarray(_sacrebleu()._extract_corpus_statistics(hypotheses, [references]), dtype=np.int64).reshape(-1, 2 + 2 * MAX_ORDER)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU (0-100) from summed statistics (hyp_len, ref_len, correct_1..4, total_1..4)."""
    from sacrebleu.metrics import BLEU

    s = [int(x) for x in stats]
    return float(BLEU.compute_bleu(s[2 : 2 + MAX_ORDER], s[2 + MAX_ORDER :], s[0], s[1]).score)


def corpus_bleu_with_ci(
    hypotheses: list[str], references: list[str], *, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, float]:
    """``bleu``, ``bleu_ci_low``, ``bleu_ci_high``, ``bleu_n``: corpus BLEU and a percentile bootstrap
    interval over prompts (each resample recomputes the corpus score, not a mean of sentence scores)."""
    n = len(hypotheses)
    if n == 0:
        return {"bleu": float("nan"), "bleu_ci_low": float("nan"), "bleu_ci_high": float("nan"), "bleu_n": 0.0}
    stats = bleu_statistics(hypotheses, references)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.array([bleu_from_statistics(stats[row].sum(axis=0)) for row in idx])
    alpha = (1.0 - level) / 2.0
    return {
        "bleu": bleu_from_statistics(stats.sum(axis=0)),
        "bleu_ci_low": float(np.quantile(boots, alpha)),
        "bleu_ci_high": float(np.quantile(boots, 1.0 - alpha)),
        "bleu_n": float(n),
    }


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def char_sentence_bleu(hypothesis: str, reference: str) -> float:
    """The reference code's character-level sentence BLEU (nltk ``sentence_bleu`` on strings), 0-1."""
    hyp, ref = hypothesis.strip(), reference.strip()
    precisions = []
    for n in range(1, MAX_ORDER + 1):
        counts, ref_counts = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        clipped = sum(min(c, ref_counts[g]) for g, c in counts.items())
        precisions.append((clipped, max(1, sum(counts.values()))))
    if precisions[0][0] == 0:  # nltk: no matching character at all -> 0
        return 0.0
    c, r = len(hyp), len(ref)
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    log_sum = math.fsum(
        (1.0 / MAX_ORDER) * math.log(num / den if num else sys.float_info.min) for num, den in precisions
    )
    return brevity * math.exp(log_sum)
