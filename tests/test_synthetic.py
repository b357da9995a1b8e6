"""tutorlib.synthetic: generation that resumes without paying twice, and filters that catch planted flaws."""

from __future__ import annotations

import json

import pytest

from tutorlib import grading, synthetic


def _pair(i: int) -> dict:
    return {"dialogue": f"Customer: question {i}\nAgent: answer {i}", "summary": f"Summary {i}."}


def test_an_interrupted_run_resumes_and_makes_only_what_is_missing(tmp_path):
    path, asked = tmp_path / "synthetic.jsonl", []

    def interrupted(i: int) -> dict:
        if i == 3:
            raise KeyboardInterrupt  # not an Exception: it stops the run, as a learner's interrupt does
        asked.append(i)
        return _pair(i)

    with pytest.raises(KeyboardInterrupt):
        synthetic.resumable(path, 6, interrupted)
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [0, 1, 2]
    rows = synthetic.resumable(path, 6, lambda i: asked.append(i) or _pair(i))
    assert asked == [0, 1, 2, 3, 4, 5] and [r["summary"] for r in rows] == [
        f"Summary {i}." for i in range(6)
    ]
    assert synthetic.resumable(path, 4, lambda i: pytest.fail("nothing is missing")) == rows[:4]


def test_failures_are_counted_and_retried_on_the_next_run(tmp_path):
    path, calls = tmp_path / "synthetic.jsonl", []

    def flaky(i: int) -> dict:
        calls.append(i)
        if i == 2 and calls.count(2) == 1:
            raise RuntimeError("rate limited")
        return {"dialogue": "no summary"} if i == 4 and calls.count(4) == 1 else _pair(i)

    with pytest.warns(
        UserWarning, match=r"2 of 5 rows failed .*first: 2: RuntimeError: rate limited"
    ):
        assert len(synthetic.resumable(path, 5, flaky)) == 3
    assert len(synthetic.resumable(path, 5, flaky)) == 5 and calls[5:] == [2, 4]


def test_a_line_cut_short_is_dropped_and_made_again(tmp_path):
    path = tmp_path / "synthetic.jsonl"
    synthetic.resumable(path, 2, _pair)
    path.write_text(path.read_text() + '{"index": 2, "dial', encoding="utf-8")  # killed mid-write
    with pytest.warns(UserWarning, match="1 damaged line"):
        rows = synthetic.resumable(path, 3, _pair)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [0, 1, 2]
    with pytest.raises(ValueError, match="non-negative int"):
        synthetic.resumable(path, -1, _pair)


def test_the_filters_catch_every_planted_flaw_and_otherwise_only_chance_repeats():
    rows = [synthetic.template_pair(i) for i in range(40)]
    assert rows == [synthetic.template_pair(i) for i in range(40)]  # deterministic
    items = [
        {"id": i, "dialogue": r["dialogue"], "summary": r["summary"]} for i, r in enumerate(rows)
    ]
    grades = grading.grade_many(
        grading.OfflineJudge(), "tweetsumm", items
    )  # no references: the dialogue
    judged_bad = set(grades.index[grades["total"] < 3])
    repeats = synthetic.near_duplicates([r["dialogue"] for r in rows], threshold=0.8)
    assert all(rows[j]["planted"] is None for j in repeats.values())
    planted = {i for i, r in enumerate(rows) if r["planted"]}
    assert planted <= judged_bad | set(repeats) and len(planted) == 12
    for i in (
        judged_bad | set(repeats)
    ) - planted:  # templates repeat themselves by chance: a word or two apart
        assert (
            i in repeats
            and len(set(rows[i]["dialogue"].split()) ^ set(rows[repeats[i]]["dialogue"].split()))
            <= 4
        )
    assert synthetic.near_duplicates(["a b c d e", "a b c d e", "v w x y z"]) == {1: 0}
