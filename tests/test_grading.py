"""tutorlib.grading against a real local HTTP server that speaks `/v1/chat/completions`, so the real SDK runs.

The server (ThreadingHTTPServer on 127.0.0.1, port 0) replays a scripted queue of answers and records
each request. Error answers carry `retry-after-ms: 1`, which the SDK honours, so its retries take no time.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import pandas as pd
import pytest

from tutorlib.grading import (
    RUBRICS,
    LLMJudge,
    OfflineJudge,
    choose_judge,
    grade_many,
    report,
    summarize_grades,
)

KEY = "sk-test-SECRET-123"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
DIALOGUE = (
    "Customer: my account is linked to an old phone number, how do I move it to my new one?\n"
    "Agent: Hi, sorry about that! Please DM us your username and we will update the number."
)
SUMMARY = (
    "Customer wants to link the account to a new phone number. Agent asks for the username by DM."
)
REFERENCES = [
    "Customer is asking to link the account to a new phone number instead of the old number. "
    "Agent asks to send the username by direct message to update the number.",
    "Customer wants the old phone number replaced on the account. Agent requests a DM with the username.",
]
ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TUTORLIB_JUDGE_BASE_URL", "TUTORLIB_JUDGE_MODEL")


def reply(customer: int = 1, agent: int = 1, two: int = 1) -> dict:
    scores = {"customer": customer, "agent": agent, "two_sentences": two}
    return ok(json.dumps({k: {"reason": f"{k} checked.", "score": v} for k, v in scores.items()}))


def ok(text: str, n_in: int = 100, n_out: int = 20) -> dict:
    return {"status": 200, "text": text, "in": n_in, "out": n_out}


def err(status: int, message: str = "scripted error") -> dict:
    return {"status": status, "message": message}


class Scripted:
    """Answers chat completions from a scripted queue (a 418 once it runs out)."""

    def __init__(self, fake_api) -> None:
        self.script: deque[dict] = deque()
        self.api = fake_api(self.answer)
        self.hits, self.base_url = self.api.hits, self.api.base_url

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        step = self.script.popleft() if self.script else err(418, "script exhausted")
        if step["status"] != 200:
            return step["status"], {"error": {"message": step["message"], "type": "test"}}
        message = {"role": "assistant", "content": step["text"], "refusal": None}
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}
        usage = {"prompt_tokens": step["in"], "completion_tokens": step["out"], "total_tokens": 0}
        created = int(time.time())
        payload = {"id": "c1", "object": "chat.completion", "created": created, "model": "m"}
        return 200, payload | {"choices": [choice], "usage": usage}


@pytest.fixture
def server(monkeypatch, fake_api):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return Scripted(fake_api)


@pytest.fixture
def judge(server, tmp_path):
    cache = tmp_path / "judgments"
    return LLMJudge(
        "judge-model", server.base_url, KEY, max_retries=2, timeout=5.0, cache_dir=cache
    )


def items(*summaries: str) -> list[dict]:
    return [
        {"id": f"d{i}", "dialogue": DIALOGUE, "summary": s, "references": REFERENCES}
        for i, s in enumerate(summaries)
    ]


def grade(judge, summary: str = SUMMARY) -> pd.Series:
    return grade_many(judge, "tweetsumm", items(summary)).iloc[0]


def test_rubrics_are_data_with_the_documents_criteria():
    tweetsumm, quality = RUBRICS["tweetsumm"], RUBRICS["summary_quality"]
    assert [c.name for c in tweetsumm.criteria] == ["customer", "agent", "two_sentences"]
    assert all(c.scale == (0, 1) for c in tweetsumm.criteria)
    assert [c.name for c in quality.criteria] == [
        "relevance",
        "coherence",
        "consistency",
        "fluency",
    ]
    assert all(c.scale == (1, 5) for c in quality.criteria)
    with pytest.raises(ValueError, match="unknown rubric"):
        grade_many(OfflineJudge(), "nope", [])


def test_valid_reply_is_parsed_and_the_request_is_strict_json(server, judge):
    server.script.append(reply(1, 0, 1) | {"in": 123, "out": 45})
    row = grade(judge)
    assert not row["failed"] and row["reason"].startswith("customer: customer checked.")
    assert [row[c] for c in ("customer", "agent", "two_sentences", "total")] == [1, 0, 1, 2]
    assert (row["input_tokens"], row["output_tokens"], row["retries"], row["cached"]) == (
        123,
        45,
        0,
        False,
    )
    [hit] = server.hits
    assert hit["path"] == "/v1/chat/completions" and hit["auth"] == f"Bearer {KEY}"
    body = hit["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert (
        schema["required"] == ["customer", "agent", "two_sentences"]
        and not schema["additionalProperties"]
    )
    assert schema["$defs"]["agent"]["properties"]["score"]["enum"] == [0, 1]
    assert body["messages"][0]["role"] == "system" and SUMMARY in body["messages"][1]["content"]


def test_invalid_reply_is_asked_again_once_naming_the_problem(server, judge):
    server.script.extend([ok('{"customer": {"score": 1, '), reply()])
    row = grade(judge)
    assert not row["failed"] and row["total"] == 3
    assert row["input_tokens"] == 200 and len(server.hits) == 2  # both replies were paid for
    second = server.hits[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "Invalid JSON" in second[-1]["content"]


def test_two_invalid_replies_fail_and_are_counted_never_zero(server, judge):
    off_scale = json.loads(reply()["text"]) | {"agent": {"reason": "r", "score": 7}}
    server.script.extend(
        [ok(json.dumps(off_scale)), ok('{"customer": {"reason": "r", "score": 1}}'), reply(1, 1, 0)]
    )
    df = grade_many(judge, "tweetsumm", items("first summary.", "second summary."), workers=1)
    assert list(df["id"]) == ["d0", "d1"] and list(df["failed"]) == [True, False]
    assert all(pd.isna(df.loc[0, c]) for c in ("customer", "agent", "two_sentences", "total"))
    assert (
        df.loc[0, "reason"]
        == "invalid reply twice: agent: Field required; two_sentences: Field required"
    )
    assert (
        "agent: score: Input should be 0 or 1" in server.hits[1]["body"]["messages"][-1]["content"]
    )
    totals = summarize_grades(df, "tweetsumm")
    assert (totals["graded"], totals["failed"], totals["total"], totals["max_total"]) == (
        1,
        1,
        2,
        3,
    )
    assert totals["criteria"] == {"customer": 1, "agent": 1, "two_sentences": 0}
    assert totals["criteria_max"] == {"customer": 1, "agent": 1, "two_sentences": 1}
    assert (
        totals["input_tokens"] == 300 and totals["cost_usd"] is None
    )  # a local judge has no price
    line = report(totals)
    assert (
        "graded 1, failed 1 (failures are not scored)" in line and "judge-model @ 127.0.0.1" in line
    )


def test_rate_limit_is_retried_by_the_sdk_and_counted(server, judge):
    server.script.extend([err(429, "Rate limit reached"), reply()])
    row = grade(judge)
    assert not row["failed"] and row["retries"] == 1 and len(server.hits) == 2


def test_server_errors_past_the_sdk_retries_fail_are_counted_and_not_cached(server, judge):
    server.script.extend([err(500)] * 3 + [reply()])
    df = grade_many(judge, "tweetsumm", items(SUMMARY))
    row = df.iloc[0]
    assert (
        row["failed"] and row["reason"].startswith("InternalServerError") and pd.isna(row["total"])
    )
    assert row["retries"] == 2 and len(server.hits) == 3  # the first try and max_retries=2 more
    totals = summarize_grades(df, "tweetsumm")
    assert (totals["failed"], totals["graded"], totals["max_total"], totals["retries"]) == (
        1,
        0,
        0,
        2,
    )
    assert list(judge.cache.folder.glob("*")) == []
    assert not grade(judge)["failed"] and len(server.hits) == 4  # a failure is tried again next run


def test_cache_makes_a_second_run_send_nothing(server, judge, tmp_path):
    server.script.extend([reply(1, 1, 1), reply(0, 1, 1)])
    summaries = ("A summary one. Agent replies.", "A summary two. Agent replies.")
    first = grade_many(judge, "tweetsumm", items(*summaries), workers=1)
    again = grade_many(judge, "tweetsumm", items(*summaries), workers=2)
    assert len(server.hits) == 2 and again["cached"].all() and not first["cached"].any()
    assert list(again["total"]) == list(first["total"]) == [3, 2]
    assert summarize_grades(again, "tweetsumm")["input_tokens"] == 0
    other = LLMJudge(
        model="other", base_url=judge.base_url, api_key=KEY, cache_dir=judge.cache.folder
    )
    server.script.append(reply())
    assert (
        not grade(other, summaries[0])["cached"] and len(server.hits) == 3
    )  # the judge model is in the key


def test_key_never_leaks(server, judge, capsys, monkeypatch):
    server.script.extend([err(401, f"Incorrect API key provided: {KEY}"), reply()])
    df = grade_many(judge, "tweetsumm", items("one summary.", "two summary."), workers=1)
    assert df["failed"].tolist() == [True, False] and "[redacted]" in df.loc[0, "reason"]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    chosen = choose_judge()
    texts = [
        df.to_csv(),
        report(summarize_grades(df, "tweetsumm")),
        *capsys.readouterr(),
        repr(judge),
        chosen.label,
        *(p.read_text() for p in judge.cache.folder.glob("*")),
    ]
    assert all(KEY not in text for text in texts)
    assert judge.api_key == KEY and chosen.api_key == KEY and OfflineJudge().api_key is None
    assert all(hit["auth"] == f"Bearer {KEY}" for hit in server.hits)


def test_empty_summary_scores_the_minimum_without_a_request(server, judge):
    row = grade(judge, "   ")
    assert (
        not row["failed"]
        and row["total"] == 0
        and row["reason"] == "empty summary"
        and server.hits == []
    )


def test_choose_judge_follows_the_environment(monkeypatch, capsys):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "  ")  # a blank key is no key
    assert isinstance(choose_judge(), OfflineJudge) and "OPENAI_API_KEY" in capsys.readouterr().out
    monkeypatch.setenv("TUTORLIB_JUDGE_BASE_URL", "http://user:pw@localhost:11434/v1")
    monkeypatch.setenv("TUTORLIB_JUDGE_MODEL", "qwen")
    local = choose_judge()
    assert (
        isinstance(local, LLMJudge)
        and local.label == "qwen @ localhost:11434"
        and local.api_key is None
    )
    assert "base URL" in capsys.readouterr().out
    choose_judge(verbose=False)
    assert capsys.readouterr().out == ""


def test_llm_judge_settings_label_and_price(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        LLMJudge(api_key=" ")
    openai_judge = LLMJudge(model="gpt-4o-2024-08-06", api_key=KEY, cache_dir=tmp_path)
    assert openai_judge.label == "gpt-4o-2024-08-06 (OpenAI)" and openai_judge.price == (2.5, 10.0)
    with pytest.raises(ValueError, match="http"):
        LLMJudge(base_url="localhost:8000", cache_dir=tmp_path)


def test_offline_judge_is_a_labelled_overlap_proxy():
    judge = OfflineJudge(threshold=0.3)
    assert "not GPT-4" in judge.label and judge.api_key is None
    good = "Customer wants to link the account to a new phone number. Agent asks for the username by direct message."
    off_topic = "Customer loves the playlist feature. Agent recommends a podcast about cooking. <END_OF_SECOND_SENTENCE>"
    mixed = "Customer wants a new phone number on the account. Agent talks about the weather. It is sunny."
    df = grade_many(judge, "tweetsumm", items(good, off_topic, mixed))
    assert df[["customer", "agent", "two_sentences"]].values.tolist() == [
        [1, 1, 1],
        [0, 0, 1],
        [1, 0, 0],
    ]
    assert grade_many(OfflineJudge(threshold=0.9), "tweetsumm", items(good))["customer"][0] == 0
    no_refs = grade_many(
        judge, "tweetsumm", [{"dialogue": DIALOGUE, "summary": good, "references": [" "]}]
    )
    assert no_refs["failed"][0] and "reference" in no_refs["reason"][0]
    totals = summarize_grades(df, "tweetsumm")
    assert totals["cost_usd"] == 0.0 and totals["judge"] == judge.label
    quality = grade_many(
        judge, "summary_quality", items(good, off_topic)
    )  # counted as failed, never zero
    assert quality["failed"].all() and "needs an LLM judge" in quality["reason"][0]
    assert summarize_grades(quality, "summary_quality")["graded"] == 0
    with pytest.raises(ValueError, match="threshold"):
        OfflineJudge(threshold=0)


def test_bad_input_is_refused_clearly(judge):
    with pytest.raises(ValueError, match="item 1"):
        grade_many(judge, "tweetsumm", [{"dialogue": "d", "summary": "s"}, {"dialogue": "d"}])
    with pytest.raises(ValueError, match="missing columns"):
        summarize_grades(pd.DataFrame({"customer": [1]}), "tweetsumm")
    assert summarize_grades(grade_many(judge, "tweetsumm", []), "tweetsumm")["graded"] == 0


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")
def test_offline_proxy_tells_matching_from_mismatched_real_summaries():
    convs = []
    for line in (REALDATA / "tweetsumm.valid.annotations.jsonl").read_text().splitlines():
        convs.append(
            [
                " ".join(a["abstractive"])
                for a in json.loads(line)["annotations"]
                if a["abstractive"]
            ]
        )
    judge, rubric = OfflineJudge(), RUBRICS["tweetsumm"]
    matched = sum(
        judge.grade(rubric, "", refs[0], refs[1:])["customer"] for refs in convs if len(refs) > 1
    )
    mismatched = sum(
        judge.grade(rubric, "", a[0], b)["customer"] for a, b in zip(convs, convs[1:], strict=False)
    )
    assert matched > 0.5 * len(convs) and mismatched < 0.1 * len(convs)
