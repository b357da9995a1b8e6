"""ROUGE F1 via rouge-score (not `evaluate.load`: ARCHITECTURE.md), best of several references, with
bootstrap CIs. `sentences` is the package's one sentence splitter: ROUGE-Lsum and the two-sentence
criterion both use it."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
JUDGE = "ROUGE (rouge-score, best of the references)"  # how records name this scorer
_MARKER = re.compile(r"<[^<>\s]+>")  # template end markers such as <END_OF_SECOND_SENTENCE>
_BREAK = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+")
# A title or "e.g." is always followed by more of the same sentence.
_NEVER_END = re.compile(r"(?i)\b(?:e\.g|i\.e|mr|mrs|ms|dr|prof|vs|cf)\.$")
# After "etc.", "U.S.", "a.m." or an ellipsis, only a capital letter starts a new sentence.
_MAYBE_END = re.compile(r"(?i)(?:\b(?:etc|inc|ltd|approx)\.|\b(?:[a-z]\.){2,}|\.\.\.|…)$")


def sentences(text: str) -> list[str]:
    """The sentences of `text` after removing `<...>` marker tokens; pieces without a letter or
    digit are dropped."""
    out: list[str] = []
    for piece in _BREAK.split(" ".join(_MARKER.sub(" ", text).split())):
        if out and (
            _NEVER_END.search(out[-1]) or (_MAYBE_END.search(out[-1]) and not piece[:1].isupper())
        ):
            out[-1] += " " + piece
        else:
            out.append(piece)
    return [s for s in out if re.search(r"\w", s)]


def _per_example(
    predictions: Sequence[str], references_list: Sequence[Sequence[str]]
) -> np.ndarray:
    """F1 per example (rows) and metric (columns), each against the example's best reference."""
    from rouge_score import rouge_scorer  # deferred: it imports nltk

    if isinstance(predictions, str) or isinstance(references_list, str):
        raise ValueError("predictions and references_list must be lists, not a single string")
    if len(predictions) != len(references_list):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references_list)} reference lists; "
            "expected one list of references per prediction"
        )
    if not predictions:
        raise ValueError("got no predictions; expected at least one")
    scorer = rouge_scorer.RougeScorer(list(_KEYS), use_stemmer=True)
    rows = []
    for i, (prediction, refs) in enumerate(zip(predictions, references_list, strict=True)):
        given = [refs] if isinstance(refs, str) else refs
        refs = [r for r in given if isinstance(r, str) and r.strip()]
        if not isinstance(prediction, str) or not refs:
            raise ValueError(
                f"example {i} needs a string prediction and at least one non-empty reference"
            )
        # One sentence per line: the layout under which rougeLsum computes its summary-level LCS.
        best = scorer.score_multi(
            ["\n".join(sentences(r)) for r in refs], "\n".join(sentences(prediction))
        )
        rows.append([best[key].fmeasure for key in _KEYS])
    return np.array(rows)


def rouge(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F1 (0-1, Porter stemmer), each prediction vs its best reference."""
    means = _per_example(predictions, references_list).mean(axis=0)
    return {key: float(value) for key, value in zip(_KEYS, means, strict=True)}


def rouge_with_ci(
    predictions: Sequence[str],
    references_list: Sequence[Sequence[str]],
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`rouge` plus a percentile-bootstrap 95 % interval:
    rows rouge1..rougeLsum, columns score, low, high."""
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}; expected at least 1 bootstrap resample")
    scores = _per_example(predictions, references_list)
    draws = np.random.default_rng(seed).integers(0, len(scores), size=(n_boot, len(scores)))
    low, high = np.percentile(scores[draws].mean(axis=1), [2.5, 97.5], axis=0)
    return pd.DataFrame({"score": scores.mean(axis=0), "low": low, "high": high}, index=list(_KEYS))
