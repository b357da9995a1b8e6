"""ROUGE against hand-worked values, best of several references, bootstrap intervals, the sentence splitter."""

import json
from pathlib import Path

import pytest

from tutorlib import metrics

KEYS = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def test_identical_texts_score_one():
    text = "The customer asked for a refund. The agent sent a link."
    assert metrics.rouge([text], [[text]]) == pytest.approx(dict.fromkeys(KEYS, 1.0))


def test_rouge_matches_hand_computed_values():
    # "the cat sat" vs "the cat sat on the mat": 3 shared unigrams, P = 1, R = 3/6 -> F = 2/3;
    # both predicted bigrams are among the reference's 5 -> P = 1, R = 2/5 -> F = 4/7; LCS = 3 words -> 2/3.
    scores = metrics.rouge(["the cat sat", "hello"], [["the cat sat on the mat"], ["goodbye"]])
    assert scores["rouge1"] == pytest.approx((2 / 3 + 0) / 2)  # a mean over examples
    assert scores["rouge2"] == pytest.approx((4 / 7 + 0) / 2)
    assert metrics.rouge(["cats"], [["cat"]])["rouge1"] == pytest.approx(1.0)  # Porter stemmer on


def test_rougelsum_sees_the_sentence_boundaries():
    ref = "The customer asked for a refund. The agent sent a link."
    pred = "The agent sent a link. The customer asked for a refund."
    # Whole-text LCS is "the customer asked for a refund", 6 of 11 words; sentence by sentence all 11 match.
    scores = metrics.rouge([pred], [[ref]])
    assert scores["rougeL"] == pytest.approx(6 / 11) and scores["rougeLsum"] == pytest.approx(1.0)


def test_best_of_the_references_beats_a_single_bad_one():
    prediction, good, bad = "the cat sat", "the cat sat on the mat", "a dog ran away"
    best = metrics.rouge([prediction], [[bad, good]])
    assert best == pytest.approx(metrics.rouge([prediction], [[good]]))
    assert all(best[k] > v for k, v in metrics.rouge([prediction], [[bad]]).items())


def test_interval_contains_the_score_and_is_reproducible():
    preds = ["the cat sat", "a dog ran", "birds fly south", "the cat sat on the mat", "fish swim"]
    refs = [
        ["the cat sat on the mat"],
        ["a dog ran home"],
        ["fish swim"],
        ["the cat sat on the mat"],
        ["fish"],
    ]
    table = metrics.rouge_with_ci(preds, refs, n_boot=300)
    assert list(table.index) == KEYS and list(table.columns) == ["score", "low", "high"]
    assert table["score"].to_dict() == pytest.approx(metrics.rouge(preds, refs))
    assert ((table["low"] <= table["score"]) & (table["score"] <= table["high"])).all()
    assert (table["low"] < table["high"]).all()
    assert table.equals(
        metrics.rouge_with_ci(preds, refs, n_boot=300)
    )  # the seed fixes the resamples


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], [["a"]], "2 predictions but 1 reference lists"),
        ([], [], "no predictions"),
        (["a"], [[" "]], "example 0 needs"),
        ("a", [["a"]], "not a single string"),
    ],
)
def test_bad_input_raises_saying_what_was_wrong(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        metrics.rouge(predictions, references)
    with pytest.raises(ValueError, match="n_boot"):
        metrics.rouge_with_ci(["a"], [["a"]], n_boot=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("Wants e.g. a refund. Dr. Lee will call.", ["Wants e.g. a refund.", "Dr. Lee will call."]),
        (
            "Moved to the U.S. and needs help. Asks for a DM.",
            ["Moved to the U.S. and needs help.", "Asks for a DM."],
        ),
        ("Late... and nobody knows why. Sorry.", ["Late... and nobody knows why.", "Sorry."]),
        (
            "The 5.30pm train, see www.x.co.uk/a.html now. Ok.",
            ["The 5.30pm train, see www.x.co.uk/a.html now.", "Ok."],
        ),
        (
            "Asks for a refund. Gets a link. <END_OF_SECOND_SENTENCE> <END>",
            ["Asks for a refund.", "Gets a link."],
        ),
        ("no full stop at the end", ["no full stop at the end"]),
        ("<END_OF_SECOND_SENTENCE>", []),
    ],
)
def test_sentences(text, expected):
    assert metrics.sentences(text) == expected


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")
def test_sentences_agree_with_the_tweetsumm_annotators():
    agree = total = 0
    for line in (REALDATA / "tweetsumm.valid.annotations.jsonl").read_text().splitlines():
        for parts in (
            a["abstractive"] for a in json.loads(line)["annotations"] if a["abstractive"]
        ):
            got = metrics.sentences(" ".join(parts))
            agree += len(got) == len(parts) and got[0] == " ".join(parts[0].split())
            total += 1
    assert (
        total > 300 and agree / total > 0.97
    )  # the rest are annotator slots holding two sentences
