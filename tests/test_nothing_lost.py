"""Nothing lost in silence, second round (issue 23): paid judgments, record names, validation before
generating, undecodable files, damaged state files, and every file a run writes written whole."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from datasets import Dataset

from tutorlib import course, grading, openai_ft, paths, results, synthetic
from tutorlib.profile import detect

DIALOGUE = "Customer: my parcel is late\nAgent: Sorry! It arrives tomorrow."
SUMMARY = "Customer says the parcel is late. Agent says it arrives tomorrow."
MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def smoke():
    return detect("smoke")


def _judge_server(fake_api):
    """A chat-completions server that always answers with full marks."""
    scores = {k: {"reason": "ok.", "score": 1} for k in ("customer", "agent", "two_sentences")}
    message = {"role": "assistant", "content": json.dumps(scores), "refusal": None}
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    body = {"id": "c", "object": "chat.completion", "created": int(time.time()), "model": "m"}
    return fake_api(lambda *_: (200, body | {"choices": [choice], "usage": usage}))


def _items(n: int) -> list[dict]:
    return [{"id": str(i), "dialogue": DIALOGUE, "summary": f"{SUMMARY} {i}"} for i in range(n)]


def test_an_unwritable_judge_cache_is_named_before_the_first_paid_request(fake_api, tmp_path):
    # Before: NotADirectoryError after 3-4 answered (and paid) requests, and no grades returned.
    server = _judge_server(fake_api)
    (blocked := tmp_path / "a-file").write_text("not a folder")
    judge = grading.LLMJudge("m", server.base_url, "sk-x", cache_dir=blocked / "judgments")
    with pytest.raises(OSError, match=r"judge's cache folder .*a-file/judgments cannot be written"):
        grading.grade_many(judge, "tweetsumm", _items(4))
    assert server.hits == []  # nothing was asked, so nothing was paid


def test_a_judgment_that_came_back_is_kept_when_its_cache_write_fails(
    fake_api, tmp_path, monkeypatch
):
    server = _judge_server(fake_api)
    judge = grading.LLMJudge("m", server.base_url, "sk-x", cache_dir=tmp_path / "judgments")
    judge.cache.check()
    real = paths.write_atomic

    def full_disk(path, text):
        if path.parent == judge.cache.folder:
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(judge.cache, "check", lambda: None)
    monkeypatch.setattr(paths, "write_atomic", full_disk)
    with pytest.warns(UserWarning, match="judgment not cached in .*No space left"):
        grades = grading.grade_many(judge, "tweetsumm", _items(3))
    assert len(server.hits) == 3 and not grades["failed"].any() and list(grades["total"]) == [3] * 3


def test_configurations_whose_names_collide_keep_a_record_each(smoke, tmp_path, monkeypatch):
    # Before: "DistilGPT2 基线" and "DistilGPT2 微调" both became 01_distilgpt2.json, the second
    # overwriting the first in silence (and "QLoRA" / "QLoRA+" likewise).
    monkeypatch.setenv("TUTORLIB_RESULTS", str(tmp_path))
    lesson = course.Lesson("01_x", smoke, template="tweetsumm", judge=grading.OfflineJudge())
    names = ["DistilGPT2 基线", "DistilGPT2 微调", "QLoRA", "QLoRA+"]
    files = [
        lesson.record(n, model="distilgpt2", method="base", scores={"total": i})
        for i, n in enumerate(names)
    ]
    assert len(set(files)) == 4
    found = results.latest("smoke", names)
    assert [r["extra"]["configuration"] for r in found] == names
    assert [r["scores"]["total"] for r in found] == [0, 1, 2, 3]
    again = lesson.record("QLoRA+", model="distilgpt2", method="base", scores={"total": 9})
    assert again == files[3]  # the same configuration keeps its own file


def test_a_record_is_never_overwritten_by_another_configuration(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORLIB_RESULTS", str(tmp_path))
    fields = {"notebook": "01", "model": "m", "method": "base", "scores": {}}
    results.record("01_qlora", profile=smoke, extra={"configuration": "QLoRA"}, **fields)
    with pytest.raises(ValueError, match=r"holds the record of configuration 'QLoRA'.*'QLoRA\+'"):
        results.record("01_qlora", profile=smoke, extra={"configuration": "QLoRA+"}, **fields)
    assert results.load_records("smoke")[0]["extra"]["configuration"] == "QLoRA"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"template": "tweetsumm", "rubric": "rogue"},
            r"unknown rubric 'rogue'; expected one of: .*rouge",
        ),
        ({"template": "flan-t5"}, r"unknown template 'flan-t5'; expected one of: .*flan_t5"),
        ({"template": "tweetsumm", "judge": "gpt-4o"}, r"judge 'gpt-4o' has no grade\(\) method"),
    ],
)
def test_a_lesson_checks_its_rubric_template_and_judge_before_anything_is_generated(
    smoke, options, message
):
    # Before: a misspelt rubric was reported after every summary was generated, a misspelt
    # template was a bare KeyError, and a judge given as a name failed at the first grading.
    with pytest.raises(ValueError, match=message):
        course.Lesson("01_x", smoke, **options)


def test_a_training_file_that_is_not_utf8_names_the_line(tmp_path, monkeypatch):
    # Before: a bare UnicodeDecodeError naming neither file nor line.
    monkeypatch.setattr(openai_ft, "_encoder", lambda model: None)
    good = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
    )
    bad = json.dumps(
        {"messages": [{"role": "user", "content": "café"}, {"role": "assistant", "content": "ok"}]},
        ensure_ascii=False,  # as an editor saving in cp1252 would write it
    )
    path = tmp_path / "train.jsonl"
    path.write_bytes(((good + "\n") * 10).encode() + bad.encode("cp1252") + b"\n")
    report = openai_ft.check(path, MODEL)
    assert report.examples == 10
    assert report.problems == [
        (11, "not UTF-8 at byte 47 of the line (invalid continuation byte); save the file as UTF-8")
    ]


def test_content_given_as_text_parts_is_counted_and_other_parts_are_named(tmp_path, monkeypatch):
    # Before: a list of content parts, which OpenAI's chat format accepts, was "empty or missing".
    monkeypatch.setattr(openai_ft, "_encoder", lambda model: None)
    parts = [
        {"type": "text", "text": "Customer: late parcel."},
        {"type": "text", "text": " Agent: sorry."},
    ]
    row = {
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "Late."}]
    }
    image = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": "A cat."},
        ]
    }
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join([json.dumps(row)] * 10 + [json.dumps(image)]) + "\n", encoding="utf-8"
    )
    report = openai_ft.check(path, MODEL)
    assert report.examples == 10 and report.tokens[0] == 3 + (3 + 9) + (3 + 2)
    assert report.problems == [
        (
            11,
            "message 1 (user): content parts of type ['image_url']; this check counts text parts only",
        )
    ]


@pytest.mark.parametrize("damage", ["", '{"sha256": "ab', "[]"])
def test_a_damaged_job_state_is_named_and_nothing_is_uploaded_twice(tmp_path, damage):
    # Before: a bare JSONDecodeError naming no file (an interrupted in-place write leaves exactly that).
    (data := tmp_path / "train.jsonl").write_text("{}\n", encoding="utf-8")
    (state := tmp_path / "job.json").write_text(damage, encoding="utf-8")

    class Client:  # any call to the API would be a second upload or job
        def __getattr__(self, name):
            raise AssertionError(f"the API was called ({name}) despite a damaged state file")

    with pytest.raises(ValueError, match=rf"job state file {state} is damaged .*delete the file"):
        openai_ft.submit(Client(), data, MODEL, state)
    assert state.read_text(encoding="utf-8") == damage  # left for the learner to repair


def test_a_synthetic_row_saved_in_another_encoding_is_made_again(tmp_path):
    # Before: UnicodeDecodeError, no file named, and the run could not resume.
    path = tmp_path / "pairs.jsonl"
    synthetic.resumable(path, 3, synthetic.template_pair)
    lines = path.read_bytes().splitlines()
    edited = json.loads(lines[1]) | {"summary": "Customer wants a café refund."}
    lines[1] = json.dumps(edited, ensure_ascii=False).encode("cp1252")  # saved by an editor
    path.write_bytes(b"\n".join(lines) + b"\n")
    made = []
    with pytest.warns(UserWarning, match="1 damaged line"):
        rows = synthetic.resumable(path, 3, lambda i: made.append(i) or synthetic.template_pair(i))
    assert made == [1] and [r["index"] for r in rows] == [0, 1, 2]
    assert [json.loads(x)["index"] for x in path.read_bytes().splitlines()] == [0, 2, 1]


def _interrupted(monkeypatch):
    """Make the next write stop half-way, as a killed process or a full disk would."""

    def half(self, data):
        with open(self, "wb") as out:
            out.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", half)


def test_an_interrupted_record_write_leaves_the_previous_record_intact(
    smoke, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUTORLIB_RESULTS", str(tmp_path))
    fields = {"notebook": "01", "model": "m", "method": "base", "extra": {"configuration": "A"}}
    path = results.record("01_a", profile=smoke, scores={"total": 1}, **fields)
    before = path.read_text(encoding="utf-8")
    _interrupted(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        results.record("01_a", profile=smoke, scores={"total": 2}, **fields)
    assert path.read_text(encoding="utf-8") == before and list(tmp_path.rglob("*.tmp")) == []


@pytest.mark.parametrize("writer", ["judgment", "job state", "synthetic rows"])
def test_every_state_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch, writer):
    target = tmp_path / "state.json"
    target.write_text('{"previous": true}\n', encoding="utf-8")
    _interrupted(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        if writer == "judgment":  # JudgmentCache.put
            grading.JudgmentCache(tmp_path).put("state", {"customer": 1})
        elif writer == "job state":  # what openai_ft.submit's keep() calls
            paths.write_atomic(target, json.dumps({"file_id": "file-1"}))
        else:  # synthetic.resumable rewriting a file without its damaged lines
            target.write_text(
                '{"index": 0, "dialogue": "a", "summary": "b"}\n{"ind', encoding="utf-8"
            )
            before = target.read_text(encoding="utf-8")
            synthetic.resumable(target, 1, synthetic.template_pair)
    expected = before if writer == "synthetic rows" else '{"previous": true}\n'
    assert target.read_text(encoding="utf-8") == expected


def test_grade_many_still_refuses_items_without_text(smoke):
    with pytest.raises(ValueError, match="item 0 needs string 'dialogue' and 'summary'"):
        grading.grade_many(
            grading.OfflineJudge(), "tweetsumm", Dataset.from_list([{"dialogue": 1}])
        )
