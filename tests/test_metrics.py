"""ROUGE against values worked out by hand, multi-reference handling, bootstrap intervals, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tutorlib import metrics


def test_rouge_matches_hand_computed_values():
    # prediction "the cat sat" (3 tokens) vs reference "the cat sat on the mat" (6 tokens)
    # rouge1: 3 shared unigrams -> P = 3/3 = 1, R = 3/6 = 0.5, F = 2PR/(P+R) = 1/1.5 = 2/3
    # rouge2: prediction bigrams {the cat, cat sat}, both in the reference's 5 bigrams
    #         -> P = 2/2 = 1, R = 2/5, F = 2*0.4/1.4 = 4/7
    # rougeL: longest common subsequence "the cat sat" = 3 -> same as rouge1, 2/3
    scores = metrics.rouge(["the cat sat"], ["the cat sat on the mat"])
    assert set(scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)
    assert scores["rougeLsum"] == pytest.approx(2 / 3)


def test_rouge_is_a_mean_over_examples():
    # example 1 is the case above (rouge1 2/3); example 2 shares nothing (0) -> mean 1/3
    scores = metrics.rouge(["the cat sat", "hello"], ["the cat sat on the mat", "goodbye"])
    assert scores["rouge1"] == pytest.approx(1 / 3)


def test_stemming_matches_plural_and_singular():
    # Porter stemming maps "cats" to "cat": one shared unigram of one -> F = 1; without it, 0.
    assert metrics.rouge(["cats"], ["cat"])["rouge1"] == pytest.approx(1.0)
    assert metrics.rouge(["cats"], ["cat"], use_stemmer=False)["rouge1"] == 0.0


def test_rougelsum_sees_sentence_boundaries():
    ref = "The customer asked for a refund. The agent sent a link."
    pred = "The agent sent a link. The customer asked for a refund."
    # Over the whole text the longest common subsequence is "the customer asked for a refund"
    # (6 of 11 tokens both ways) -> rougeL F = 6/11. Per sentence, each reference sentence is fully
    # matched by one predicted sentence -> summary-level LCS covers 11/11 -> rougeLsum F = 1.
    scores = metrics.rouge([pred], [ref])
    assert scores["rougeL"] == pytest.approx(6 / 11)
    assert scores["rougeLsum"] == pytest.approx(1.0)


def test_several_references_take_the_best_per_metric():
    prediction = "the cat sat"
    poor, good = "a dog ran away", "the cat sat on the mat"
    alone_good = metrics.rouge([prediction], [good])
    both = metrics.rouge([prediction], [[poor, good]])
    assert both == pytest.approx(alone_good)
    assert metrics.rouge([prediction], [[good, poor]]) == pytest.approx(alone_good)
    assert metrics.rouge([prediction], [poor])["rouge1"] == 0.0


def test_per_example_table_has_one_row_per_prediction():
    table = metrics.rouge_per_example(["the cat sat", "hello"], ["the cat sat on the mat", "hello"])
    assert list(table.columns) == list(metrics.ROUGE_KEYS)
    assert len(table) == 2
    assert table.loc[1, "rouge1"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], ["a"], "2 predictions but 1 references"),
        ([], [], "0 predictions"),
        (["a"], [[]], "empty list of references"),
        ("a", ["a"], "not a single string"),
    ],
)
def test_bad_inputs_raise_with_the_counts(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        metrics.rouge(predictions, references)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, size=20)
    large = rng.uniform(0, 1, size=2000)
    low_s, high_s = metrics.bootstrap_ci(small)
    low_l, high_l = metrics.bootstrap_ci(large)
    assert low_s <= small.mean() <= high_s
    assert low_l <= large.mean() <= high_l
    assert high_l - low_l < (high_s - low_s) / 4  # width shrinks like 1/sqrt(n): sqrt(100) = 10
    assert metrics.bootstrap_ci(small, seed=3) == metrics.bootstrap_ci(small, seed=3)


def test_bootstrap_interval_widens_with_confidence_and_rejects_bad_input():
    scores = np.linspace(0, 1, 50)
    low90, high90 = metrics.bootstrap_ci(scores, confidence=0.90)
    low99, high99 = metrics.bootstrap_ci(scores, confidence=0.99)
    assert low99 <= low90 and high90 <= high99
    assert metrics.bootstrap_ci([0.4]) == (0.4, 0.4)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_ci(scores, confidence=95)


def test_rouge_with_ci_reports_mean_inside_its_interval():
    preds = ["the cat sat", "a dog ran", "birds fly south", "the cat sat on the mat"]
    refs = ["the cat sat on the mat", "a dog ran home", "fish swim", "the cat sat on the mat"]
    result = metrics.rouge_with_ci(preds, refs, n_resamples=200)
    plain = metrics.rouge(preds, refs)
    for key in metrics.ROUGE_KEYS:
        assert result[key]["mean"] == pytest.approx(plain[key])
        assert result[key]["low"] <= result[key]["mean"] <= result[key]["high"]
        assert result[key]["low"] < result[key]["high"]
