"""tutorlib.openai_ft: the training-file check, the cost, and `submit` against a local fake of OpenAI's
files and fine-tuning endpoints, driven by the real openai SDK, so that resuming is tested for real."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import openai
import pytest

from tutorlib import openai_ft

MODEL = "gpt-4o-mini-2024-07-18"


def _example(
    dialogue: str = "Customer: my order is late\nAgent: sorry, DM us", summary: str = "Late order."
) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Summarize the conversation."},
            {"role": "user", "content": dialogue},
            {"role": "assistant", "content": summary},
        ]
    }


def _write(path, rows) -> None:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )


def test_check_names_each_problem_with_its_line_and_counts_the_valid_examples(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(
        openai_ft, "_encoder", lambda model: None
    )  # tiktoken's files are a download
    bad_role = _example()
    bad_role["messages"][1]["role"] = "customer"
    empty = _example(summary="  ")
    ends_with_user = {"messages": _example()["messages"][:2]}
    rows = [_example()] * 9 + [
        "{not json",
        bad_role,
        empty,
        ends_with_user,
        {"prompt": "x"},
        "",
        _example(),
    ]
    _write(path := tmp_path / "train.jsonl", rows)
    report = openai_ft.check(path, MODEL)
    lines = dict(report.problems)
    assert set(lines) == {
        10,
        11,
        12,
        13,
        14,
    }  # the blank line 15 is neither a problem nor an example
    assert "not JSON" in lines[10] and "role 'customer'" in lines[11] and "empty" in lines[12]
    assert "expected the assistant's answer" in lines[13] and "'messages'" in lines[14]
    assert (
        report.examples == 10 and len(report.tokens) == 10 and report.approximate and not report.ok
    )
    assert "line 11:" in str(report)


def test_too_few_examples_and_an_example_over_the_limit_are_problems(tmp_path, monkeypatch):
    monkeypatch.setattr(openai_ft, "_encoder", lambda model: None)
    monkeypatch.setitem(openai_ft.TRAINING, MODEL, (3.0, 40))
    _write(
        path := tmp_path / "train.jsonl",
        [_example()] * 3 + [_example("Customer: " + "word " * 100)],
    )
    report = openai_ft.check(path, MODEL)
    assert [n for n, _ in report.problems] == [4, 0]
    assert "more than" in report.problems[0][1] and "at least 10" in report.problems[1][1]
    _write(path, [_example()] * 12)
    assert openai_ft.check(path, MODEL).ok
    with pytest.raises(ValueError, match="unknown base model 'gpt-5'"):
        openai_ft.check(path, "gpt-5")


def test_cost_follows_the_token_count_and_openais_default_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(openai_ft, "_encoder", lambda model: None)
    assert [openai_ft.default_epochs(n) for n in (10, 20, 50, 10_000, 100_000)] == [10, 5, 3, 2, 1]
    _write(path := tmp_path / "train.jsonl", [_example()] * 20)
    report = openai_ft.check(path, MODEL)
    tokens, usd = report.cost()
    assert tokens == 5 * sum(report.tokens) and usd == pytest.approx(tokens * 3.0 / 1e6)
    assert report.cost(epochs=1)[0] == sum(report.tokens)


class Jobs:
    """Files and fine-tuning jobs of a fake OpenAI API; `lose_next_reply` drops a job's reply."""

    def __init__(self, fake_api) -> None:
        self.uploads: list[bytes] = []
        self.jobs: list[dict] = []
        self.lose_next_reply = False
        self.api = fake_api(self.answer)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if method == "GET":  # jobs.list(metadata=...)
            query = parse_qs(urlsplit(path).query)
            wanted = {k[9:-1]: v[0] for k, v in query.items() if k.startswith("metadata[")}
            found = [j for j in self.jobs if wanted.items() <= (j["metadata"] or {}).items()]
            return 200, {"object": "list", "data": found[::-1], "has_more": False}
        if path == "/v1/files":
            self.uploads.append(body)
            file = {"id": f"file-{len(self.uploads)}", "object": "file", "bytes": len(body)}
            file |= {"created_at": 0, "filename": "train.jsonl", "purpose": "fine-tune"}
            return 200, file | {"status": "processed"}
        return self._job(json.loads(body))

    def _job(self, asked: dict) -> tuple[int, dict]:
        job = {"id": f"ftjob-{len(self.jobs) + 1}", "object": "fine_tuning.job", "created_at": 0}
        job |= {"model": asked["model"], "status": "validating_files", "seed": 1}
        job |= {"training_file": asked["training_file"], "metadata": asked.get("metadata")}
        job |= {"fine_tuned_model": None, "organization_id": "org", "result_files": []}
        self.jobs.append(job | {"hyperparameters": {"n_epochs": "auto"}})
        if self.lose_next_reply:  # the job exists, but the client never hears of it
            self.lose_next_reply = False
            return 500, {"error": {"message": "connection reset", "type": "server_error"}}
        return 200, self.jobs[-1]


@pytest.fixture
def server(fake_api):
    return Jobs(fake_api)


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.api.base_url, max_retries=0)


def test_a_rerun_reuses_the_upload_and_the_job(server, tmp_path):
    _write(path := tmp_path / "train.jsonl", [_example()] * 10)
    first = openai_ft.submit(
        _client(server), path, MODEL, state := tmp_path / "job.json", suffix="course"
    )
    again = openai_ft.submit(_client(server), path, MODEL, state, suffix="course")
    assert first == again == "ftjob-1"
    assert (
        len(server.uploads) == 1 and len(server.jobs) == 1 and b"Late order." in server.uploads[0]
    )
    assert json.loads(state.read_text())["file_id"] == "file-1"


def test_a_job_whose_reply_was_lost_is_found_by_its_tag_and_not_created_twice(server, tmp_path):
    _write(path := tmp_path / "train.jsonl", [_example()] * 10)
    server.lose_next_reply = True
    with pytest.raises(openai.InternalServerError):
        openai_ft.submit(_client(server), path, MODEL, state := tmp_path / "job.json")
    assert "job_id" not in json.loads(
        state.read_text()
    )  # the upload was saved before the job was asked for
    assert openai_ft.submit(_client(server), path, MODEL, state) == "ftjob-1"
    assert len(server.uploads) == 1 and len(server.jobs) == 1


def test_a_changed_file_starts_afresh_and_keeps_the_earlier_ids(server, tmp_path):
    _write(path := tmp_path / "train.jsonl", [_example()] * 10)
    openai_ft.submit(_client(server), path, MODEL, state := tmp_path / "job.json")
    _write(path, [_example()] * 11)
    assert openai_ft.submit(_client(server), path, MODEL, state) == "ftjob-2"
    saved = json.loads(state.read_text())
    assert len(server.uploads) == 2 and saved["earlier"][0]["job_id"] == "ftjob-1"
