"""Reference-based scores: ROUGE computed locally with `rouge_score`, with bootstrap confidence intervals.

`evaluate.load("rouge")` fetches its script from the Hugging Face hub, which fails offline and in CI,
so the course calls Google's `rouge_score` package directly. Scores are F-measures in 0-1. When an
example has several reference summaries (TWEETSUMM, DialogSum's test split), each metric takes the
best reference for that prediction, the convention of the summarization literature.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Sentence ends followed by whitespace. Good enough for short summaries; nltk's punkt would need a
# model download, which the offline profile cannot do.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences_on_lines(text: str) -> str:
    """One sentence per line: the layout rougeLsum needs to compute its summary-level LCS."""
    lines = (part.strip() for line in text.splitlines() for part in _SENTENCE_END.split(line))
    return "\n".join(line for line in lines if line)


def _reference_lists(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> list[list[str]]:
    """Check the inputs and turn every reference entry into a non-empty list of strings."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be lists of strings, not a single string")
    if not predictions or not references:
        raise ValueError(
            f"need at least one prediction and one reference; got {len(predictions)} predictions "
            f"and {len(references)} references"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; expected one "
            "reference (or one list of references) per prediction"
        )
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs:
            raise ValueError(f"example {i} has an empty list of references; expected at least one")
        out.append(refs)
    return out


def rouge_per_example(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    use_stemmer: bool = True,
) -> pd.DataFrame:
    """ROUGE F-measures of every prediction: one row per example, columns rouge1, rouge2, rougeL, rougeLsum.

    Each reference entry may be one string or a list of strings; with several, each metric keeps the
    reference with the highest F-measure for that prediction. Texts are laid out one sentence per line
    before scoring so that rougeLsum sees sentence boundaries; the other metrics ignore line breaks.
    """
    from rouge_score import rouge_scorer  # deferred: pulls in nltk's stemmer

    reference_lists = _reference_lists(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=use_stemmer)
    rows = []
    for prediction, refs in zip(predictions, reference_lists, strict=True):
        scores = scorer.score_multi([_sentences_on_lines(r) for r in refs], _sentences_on_lines(prediction))
        rows.append({key: scores[key].fmeasure for key in ROUGE_KEYS})
    return pd.DataFrame(rows, columns=list(ROUGE_KEYS))


def rouge(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    use_stemmer: bool = True,
) -> dict[str, float]:
    """Mean ROUGE F-measures over all examples: `{"rouge1", "rouge2", "rougeL", "rougeLsum"}` in 0-1."""
    table = rouge_per_example(predictions, references, use_stemmer=use_stemmer)
    return {key: float(table[key].mean()) for key in ROUGE_KEYS}


def bootstrap_ci(
    per_example_scores: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval `(low, high)` of the mean of per-example scores.

    A test set of 50 summaries gives a noisy mean; the interval says how far another draw of 50 could
    move it, which is what decides whether two configurations really differ.
    """
    scores = np.asarray(per_example_scores, dtype=float)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"need a non-empty 1-D sequence of scores; got shape {scores.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive); got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, scores.size, size=(n_resamples, scores.size))
    means = scores[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def rouge_with_ci(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    use_stemmer: bool = True,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean ROUGE with a bootstrap interval per metric: `{"rouge1": {"mean", "low", "high"}, ...}`."""
    table = rouge_per_example(predictions, references, use_stemmer=use_stemmer)
    out = {}
    for key in ROUGE_KEYS:
        low, high = bootstrap_ci(table[key], n_resamples=n_resamples, confidence=confidence, seed=seed)
        out[key] = {"mean": float(table[key].mean()), "low": low, "high": high}
    return out
