"""Tests of tutorlib.grading against a real local HTTP server that speaks the OpenAI wire format.

The server (ThreadingHTTPServer on 127.0.0.1, port 0) answers `/v1/chat/completions` and `/v1/responses`
with bodies shaped like the SDK's `ChatCompletion` and `Response` models, replaying a scripted queue of
answers per test, and records every request it received.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from tutorlib import grading
from tutorlib.grading import (
    RUBRICS,
    Criterion,
    LLMJudge,
    OfflineJudge,
    Rubric,
    choose_judge,
    grade,
    grade_many,
    parse_reply,
    split_sentences,
    summarize_grades,
)

KEY = "sk-test-SECRET-123"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

DIALOGUE = (
    "Customer: my account is linked to an old phone number, how do I move it to my new one?\n"
    "Agent: Hi, sorry about that! Please DM us your username and we will update the number."
)
SUMMARY = "Customer wants to link the account to a new phone number. Agent asks for the username by DM."


def tweetsumm_reply(customer: int = 1, agent: int = 1, two: int = 1) -> str:
    return json.dumps(
        {
            "customer": {"reason": "The complaint is described.", "score": customer},
            "agent": {"reason": "The reply is described.", "score": agent},
            "two_sentences": {"reason": "Two sentences.", "score": two},
        }
    )


def quality_reply(relevance: int = 4, coherence: int = 5, consistency: int = 5, fluency: int = 4) -> str:
    return json.dumps(
        {
            name: {"reason": f"{name} is fine.", "score": value}
            for name, value in [
                ("relevance", relevance),
                ("coherence", coherence),
                ("consistency", consistency),
                ("fluency", fluency),
            ]
        }
    )


def ok(text: str, input_tokens: int = 100, output_tokens: int = 20, delay: float = 0.0) -> dict:
    return {"status": 200, "text": text, "in": input_tokens, "out": output_tokens, "delay": delay}


def err(status: int, message: str = "scripted error") -> dict:
    return {"status": status, "message": message}


def _chat_body(text: str, n_in: int, n_out: int) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "judge-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": text, "refusal": None},
            }
        ],
        "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
    }


def _responses_body(text: str, n_in: int, n_out: int) -> dict:
    return {
        "id": "resp_test",
        "object": "response",
        "created_at": time.time(),
        "model": "judge-model",
        "status": "completed",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [
            {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": n_in,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": n_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": n_in + n_out,
        },
    }


class FakeOpenAI:
    """A scripted OpenAI-compatible server: `script` is a queue of steps, or a function of the request body."""

    def __init__(self) -> None:
        self.script: deque | None = deque()
        self.responder = None
        self.hits: list[dict] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.hits.append(
                        {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                    )
                    if fake.responder is not None:
                        step = fake.responder(body)
                    else:
                        step = fake.script.popleft() if fake.script else err(418, "script exhausted")
                time.sleep(step.get("delay", 0))
                if step["status"] != 200:
                    payload = {"error": {"message": step["message"], "type": "test", "code": None}}
                elif self.path == "/v1/chat/completions":
                    payload = _chat_body(step["text"], step["in"], step["out"])
                elif self.path == "/v1/responses":
                    payload = _responses_body(step["text"], step["in"], step["out"])
                else:
                    step, payload = {"status": 404}, {"error": {"message": f"no route {self.path}"}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(step["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def queue(self, *steps: dict) -> None:
        self.script.extend(steps)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server(monkeypatch):
    # A proxy variable in the environment would send loopback traffic elsewhere.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("TUTORLIB_JUDGE_MODEL", "TUTORLIB_JUDGE_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def make_judge(server, tmp_path):
    def make(**kwargs) -> LLMJudge:
        args = {
            "model": "judge-model",
            "base_url": server.base_url,
            "api_key": KEY,
            "timeout": 5.0,
            "cache_dir": tmp_path / "judgments",
            "backoff": 0.01,
        }
        args.update(kwargs)
        return LLMJudge(**args)

    return make


def _user_message(hit: dict) -> str:
    body = hit["body"]
    if "messages" in body:
        return body["messages"][-1]["content"]
    return body["input"]


# --- rubrics ---------------------------------------------------------------------------------------


def test_rubrics_are_data_with_the_documents_criteria():
    assert set(RUBRICS) == {"tweetsumm", "summary_quality"}
    tweetsumm, quality = RUBRICS["tweetsumm"], RUBRICS["summary_quality"]
    assert tweetsumm.names == ("customer", "agent", "two_sentences")
    assert all(c.scale == (0, 1) for c in tweetsumm.criteria)
    assert tweetsumm.max_total * 50 == 150  # the document's "out of 150" over 50 summaries
    assert quality.names == ("relevance", "coherence", "consistency", "fluency")
    assert all(c.scale == (1, 5) for c in quality.criteria) and quality.max_total == 20
    schema = grading.response_schema("summary_quality")
    assert schema["required"] == list(quality.names) and schema["additionalProperties"] is False
    assert schema["properties"]["fluency"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="scale"):
        Criterion("x", "bad", (3, 1))
    with pytest.raises(ValueError, match="unknown rubric"):
        grading.get_rubric("nope")
    with pytest.raises(ValueError, match="unique"):
        Rubric("dup", "1", "", (Criterion("a", "", (0, 1)), Criterion("a", "", (0, 1))))


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        (
            json.dumps({"customer": {"reason": "r", "score": 1}, "agent": {"reason": "r", "score": 1}}),
            "two_sentences",
        ),
        (tweetsumm_reply(customer=2), "outside its scale 0 to 1"),
        (tweetsumm_reply().replace('"score": 1', '"score": "1"', 1), "expected an integer"),
        (tweetsumm_reply().replace('"score": 1', '"score": true', 1), "expected an integer"),
        ("", "empty"),
    ],
)
def test_parse_reply_names_the_problem(reply, problem):
    with pytest.raises(ValueError, match=problem):
        parse_reply(reply, "tweetsumm")


def test_parse_reply_accepts_a_fenced_object_and_whole_floats():
    scores, reasons = parse_reply(
        "```json\n" + tweetsumm_reply(agent=0).replace(": 1}", ": 1.0}") + "\n```", "tweetsumm"
    )
    assert scores == {"customer": 1, "agent": 0, "two_sentences": 1}
    assert all(type(v) is int for v in scores.values()) and reasons["agent"] == "The reply is described."


# --- LLM judge against the local server ------------------------------------------------------------


def test_chat_path_sends_schema_temperature_and_key_and_parses_scores(server, make_judge):
    server.queue(ok(tweetsumm_reply(customer=1, agent=0, two=1), 123, 45))
    judge = make_judge(api="chat")
    j = grade(judge, "tweetsumm", DIALOGUE, SUMMARY)
    assert not j.failed and j.scores == {"customer": 1, "agent": 0, "two_sentences": 1} and j.total == 2
    assert (j.attempts, j.retries, j.input_tokens, j.output_tokens, j.cached) == (1, 0, 123, 45, False)
    port = server.base_url.split(":")[2].split("/")[0]
    assert j.judge == f"llm:judge-model@127.0.0.1:{port}" and KEY not in j.judge
    [hit] = server.hits
    assert hit["path"] == "/v1/chat/completions"
    assert hit["authorization"] == f"Bearer {KEY}"  # the key went to the server, and only there
    body = hit["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["required"] == [
        "customer",
        "agent",
        "two_sentences",
    ]
    assert body["messages"][0]["role"] == "system" and SUMMARY in body["messages"][1]["content"]


def test_responses_path_hits_v1_responses_with_text_format(server, make_judge):
    server.queue(ok(quality_reply(4, 5, 3, 2), 210, 60))
    j = make_judge(api="responses").grade("summary_quality", DIALOGUE, SUMMARY)
    assert j.scores == {"relevance": 4, "coherence": 5, "consistency": 3, "fluency": 2} and j.total == 14
    assert (j.input_tokens, j.output_tokens) == (210, 60)
    [hit] = server.hits
    assert hit["path"] == "/v1/responses" and hit["authorization"] == f"Bearer {KEY}"
    fmt = hit["body"]["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True and fmt["name"] == "summary_quality"
    assert hit["body"]["temperature"] == 0 and DIALOGUE.splitlines()[0] in hit["body"]["input"]
    assert "response_format" not in hit["body"]


def test_settings_fall_back_to_the_environment(monkeypatch, tmp_path):
    for name in ("TUTORLIB_JUDGE_MODEL", "TUTORLIB_JUDGE_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        LLMJudge(cache_dir=tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    openai_judge = LLMJudge(cache_dir=tmp_path)
    assert openai_judge.api == "responses" and openai_judge.label == "llm:gpt-4o@api.openai.com"
    assert openai_judge.price_note == grading.PRICE_NOTE and KEY not in repr(openai_judge)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("TUTORLIB_JUDGE_BASE_URL", "http://user:pw@localhost:8000/v1")
    monkeypatch.setenv("TUTORLIB_JUDGE_MODEL", "qwen-judge")
    local = LLMJudge(cache_dir=tmp_path)
    assert local.api == "chat" and local.label == "llm:qwen-judge@localhost:8000"  # no user:pw
    assert local._api_key == "not-needed" and local.price_note == grading.LOCAL_NOTE
    assert local.estimate_cost(1000, 1000) is None
    with pytest.raises(ValueError, match="http"):
        LLMJudge(base_url="localhost:8000", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="api="):
        LLMJudge(api="grpc", cache_dir=tmp_path)


def test_malformed_json_is_asked_again_once_noting_the_problem(server, make_judge):
    server.queue(ok('{"customer": {"score": 1, '), ok(tweetsumm_reply()))
    j = make_judge().grade("tweetsumm", DIALOGUE, SUMMARY)
    assert not j.failed and j.scores == {"customer": 1, "agent": 1, "two_sentences": 1}
    assert (j.attempts, j.retries, j.input_tokens, j.output_tokens) == (2, 0, 200, 40)
    assert len(server.hits) == 2
    assert "not valid JSON" not in _user_message(server.hits[0])
    assert "not valid JSON" in _user_message(server.hits[1])


def test_missing_criterion_twice_is_a_failure_never_a_zero(server, make_judge):
    partial = json.dumps(
        {"customer": {"reason": "ok", "score": 1}, "two_sentences": {"reason": "ok", "score": 1}}
    )
    server.queue(ok(partial), ok(partial), ok(tweetsumm_reply(1, 1, 0)), ok(tweetsumm_reply(0, 1, 1)))
    items = [
        {"id": "a", "dialogue": DIALOGUE, "summary": "first summary."},
        {"id": "b", "dialogue": DIALOGUE, "summary": "second summary."},
        {"id": "c", "dialogue": DIALOGUE, "summary": "third summary."},
    ]
    df = grade_many(make_judge(), "tweetsumm", items, concurrency=1, progress=False)
    assert list(df["id"]) == ["a", "b", "c"] and list(df["failed"]) == [True, False, False]
    first = df.iloc[0]
    assert all(pd.isna(first[c]) for c in ("customer", "agent", "two_sentences", "total"))
    assert "criterion missing" in first["reason"] and "agent" in first["reason"] and first["attempts"] == 2
    assert list(df["total"][1:]) == [2, 2]
    summary = summarize_grades(df, RUBRICS["tweetsumm"])
    assert summary["failed"] == 1 and summary["graded"] == 2 and summary["items"] == 3
    assert summary["criteria"] == {"customer": 1, "agent": 2, "two_sentences": 1}
    assert summary["total"] == 4 and summary["max_total"] == 6  # maxima over graded items only
    assert summary["criteria_max"] == {"customer": 2, "agent": 2, "two_sentences": 2}
    assert summary["input_tokens"] == 400  # the failed item's two requests were still paid for
    assert len(server.hits) == 4


def test_out_of_range_score_is_asked_again(server, make_judge):
    server.queue(ok(quality_reply(fluency=7)), ok(quality_reply(fluency=3)))
    j = make_judge().grade("summary_quality", DIALOGUE, SUMMARY)
    assert j.scores["fluency"] == 3 and j.attempts == 2
    assert "fluency is 7, outside its scale 1 to 5" in _user_message(server.hits[1])


def test_rate_limit_then_success_is_retried_and_counted(server, make_judge):
    server.queue(err(429, "Rate limit reached"), ok(tweetsumm_reply()))
    j = make_judge().grade("tweetsumm", DIALOGUE, SUMMARY)
    assert not j.failed and (j.attempts, j.retries) == (1, 1) and len(server.hits) == 2


def test_server_errors_twice_then_success(server, make_judge):
    server.queue(err(500), err(503), ok(tweetsumm_reply()))
    j = make_judge().grade("tweetsumm", DIALOGUE, SUMMARY)
    assert not j.failed and (j.attempts, j.retries) == (1, 2) and len(server.hits) == 3


def test_slow_reply_times_out_and_is_retried(server, make_judge):
    server.queue(ok(tweetsumm_reply(), delay=1.5), ok(tweetsumm_reply(0, 0, 1)))
    start = time.monotonic()
    j = make_judge(timeout=0.5).grade("tweetsumm", DIALOGUE, SUMMARY)
    elapsed = time.monotonic() - start
    assert not j.failed and j.scores == {"customer": 0, "agent": 0, "two_sentences": 1}
    assert (j.attempts, j.retries) == (1, 1) and len(server.hits) == 2
    assert elapsed < 1.5  # the judge did not wait for the slow reply


def test_exhausted_retries_fail_with_the_error_class_and_are_not_cached(server, make_judge, tmp_path):
    server.queue(err(500), err(500), err(500), ok(tweetsumm_reply()))
    judge = make_judge(max_retries=2)
    j = judge.grade("tweetsumm", DIALOGUE, SUMMARY)
    assert j.failed and j.scores is None and j.total is None
    assert j.failure.startswith("InternalServerError") and j.retries == 2 and len(server.hits) == 3
    assert list((tmp_path / "judgments").glob("*.json")) == []
    again = judge.grade("tweetsumm", DIALOGUE, SUMMARY)  # a failure is retried on the next run
    assert not again.failed and len(server.hits) == 4


def test_non_transient_error_fails_at_once(server, make_judge):
    server.queue(err(400, "model not found"))
    j = make_judge().grade("tweetsumm", DIALOGUE, SUMMARY)
    assert j.failed and j.failure.startswith("BadRequestError") and j.retries == 0 and len(server.hits) == 1


def test_grade_many_caches_counts_tokens_and_cost(server, make_judge, tmp_path):
    def by_summary(body: dict) -> dict:  # concurrent requests arrive in any order
        text = body["messages"][-1]["content"]
        return ok(tweetsumm_reply(customer=int("good" in text)), 100, 20)

    server.responder = by_summary
    items = [
        {"id": i, "dialogue": DIALOGUE, "summary": f"A {kind} summary number {i}. Agent replies."}
        for i, kind in enumerate(["good", "bad", "good", "bad", "good"])
    ]
    judge = make_judge(price_per_1k=(0.01, 0.03))
    df = grade_many(judge, "tweetsumm", items, concurrency=3, progress=False)
    assert len(server.hits) == 5 and list(df["customer"]) == [1, 0, 1, 0, 1]
    assert not df["cached"].any() and df["cost_usd"].tolist() == pytest.approx([0.0016] * 5)
    first = summarize_grades(df, "tweetsumm")
    assert first["total"] == 13 and first["max_total"] == 15
    assert (first["input_tokens"], first["output_tokens"]) == (500, 100)
    assert (
        first["cost_usd"] == pytest.approx(0.5 * 0.01 + 0.1 * 0.03)
        and first["price_note"] == "given by caller"
    )
    assert len(list((tmp_path / "judgments").glob("*.json"))) == 5

    again = grade_many(judge, "tweetsumm", items, concurrency=3, progress=False)
    assert len(server.hits) == 5  # zero new requests
    assert again["cached"].all() and list(again["customer"]) == [1, 0, 1, 0, 1]
    second = summarize_grades(again, "tweetsumm")
    assert second["cached"] == 5 and second["total"] == 13 and second["input_tokens"] == 0
    assert second["cost_usd"] == 0.0

    # the cache key includes the rubric version and the model: a change re-grades
    new_rubric = Rubric("tweetsumm", "2", RUBRICS["tweetsumm"].instructions, RUBRICS["tweetsumm"].criteria)
    grade(judge, new_rubric, DIALOGUE, items[0]["summary"])
    grade(make_judge(model="other-model"), "tweetsumm", DIALOGUE, items[0]["summary"])
    assert len(server.hits) == 7
    # a damaged cache file is ignored and the item re-graded, never a crash
    for path in (tmp_path / "judgments").glob("*.json"):
        path.write_text("{half a file")
    assert not grade(judge, "tweetsumm", DIALOGUE, items[1]["summary"]).cached and len(server.hits) == 8


def test_local_server_cost_is_unknown_not_zero(server, make_judge):
    server.queue(ok(tweetsumm_reply()))
    df = grade_many(make_judge(), "tweetsumm", [{"dialogue": DIALOGUE, "summary": SUMMARY}], progress=False)
    result = summarize_grades(df, "tweetsumm")
    assert result["cost_usd"] is None and result["price_note"] == "local/unknown"
    assert result["input_tokens"] == 100 and math.isnan(df["cost_usd"].iloc[0])


def test_api_key_never_leaks(server, make_judge, tmp_path, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    # The server echoes the key in an error (as a badly written proxy might), then misbehaves in other ways.
    server.queue(
        err(401, f"Incorrect API key provided: {KEY}"),
        err(429, f"slow down {KEY}"),
        err(429, f"Authorization: Bearer {KEY}"),
        err(429),
        ok("nonsense"),
        ok("nonsense"),
        ok(tweetsumm_reply()),
    )
    judge = make_judge(max_retries=2)
    items = [{"id": n, "dialogue": DIALOGUE, "summary": f"summary {n}."} for n in range(4)]
    df = grade_many(judge, "tweetsumm", items, concurrency=1, progress=True)
    assert df["failed"].tolist() == [True, True, True, False]
    assert df["reason"][0].startswith("AuthenticationError") and df["reason"][1].startswith("RateLimitError")
    result = summarize_grades(df, "tweetsumm")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    chosen = choose_judge(verbose=True)
    texts = [
        caplog.text,
        *capsys.readouterr(),
        df.to_csv(),
        json.dumps(result, default=str),
        repr(judge),
        repr(chosen),
        *(p.read_text() for p in (tmp_path / "judgments").glob("*")),
    ]
    assert all(KEY not in text for text in texts)
    assert "[redacted]" in df["reason"][0]
    assert all(hit["authorization"] == f"Bearer {KEY}" for hit in server.hits)


def test_choose_judge_follows_the_environment(monkeypatch, capsys):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TUTORLIB_JUDGE_BASE_URL", "TUTORLIB_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    offline = choose_judge()
    assert isinstance(offline, OfflineJudge) and "OPENAI_API_KEY" in capsys.readouterr().out
    monkeypatch.setenv("TUTORLIB_JUDGE_BASE_URL", "http://localhost:11434/v1")
    local = choose_judge()
    assert isinstance(local, LLMJudge) and local.api == "chat"
    assert "base URL" in capsys.readouterr().out
    choose_judge(verbose=False)
    assert capsys.readouterr().out == ""


def test_grade_many_rejects_bad_items(make_judge):
    with pytest.raises(ValueError, match="item 1"):
        grade_many(
            make_judge(), "tweetsumm", [{"dialogue": "d", "summary": "s"}, {"dialogue": "d"}], progress=False
        )
    with pytest.raises(ValueError, match="concurrency"):
        grade_many(make_judge(), "tweetsumm", [], concurrency=0, progress=False)
    with pytest.raises(ValueError, match="missing columns"):
        summarize_grades(pd.DataFrame({"customer": [1]}), "tweetsumm")


# --- offline proxy judge ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "The customer asked why the 8.42 train to Reading was cancelled. The agent blamed a power fault.",
            [
                "The customer asked why the 8.42 train to Reading was cancelled.",
                "The agent blamed a power fault.",
            ],
        ),
        (
            "Customer wants e.g. a refund or a voucher. Agent offers a voucher.",
            ["Customer wants e.g. a refund or a voucher.", "Agent offers a voucher."],
        ),
        (
            "Customer streams apps, e.g. Netflix, on the TV. Agent suggests a reset.",
            ["Customer streams apps, e.g. Netflix, on the TV.", "Agent suggests a reset."],
        ),
        (
            "Customer moved to the U.S. and needs a new billing address. Agent asks for a DM.",
            ["Customer moved to the U.S. and needs a new billing address.", "Agent asks for a DM."],
        ),
        (
            "Customer cannot open https://www.example.co.uk/help/page.html on mobile. Agent suggests www.example.com.",
            [
                "Customer cannot open https://www.example.co.uk/help/page.html on mobile.",
                "Agent suggests www.example.com.",
            ],
        ),
        (
            "Customer says the train is late... and nobody explains why. Agent apologises.",
            ["Customer says the train is late... and nobody explains why.", "Agent apologises."],
        ),
        (
            "Customer asks about the 5.30pm service. Agent says Dr. Lee will call. "
            '<END_OF_SECOND_SENTENCE> <END_SENTENCE> <END_OF_SECOND_SENTENCE>>"") <END_SENTENCE> <END_OF_SECOND',
            ["Customer asks about the 5.30pm service.", "Agent says Dr. Lee will call."],
        ),
        (
            "Customer asks for help with a code sent to an old number",
            ["Customer asks for help with a code sent to an old number"],
        ),
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("", []),
        ("<END_OF_SECOND_SENTENCE>", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


REFERENCES = [
    "Customer is asking to link the account to a new phone number instead of the old number. "
    "Agent asks to send the username by direct message to update the number.",
    "Customer wants the old phone number replaced on the account. Agent requests a DM with the username.",
]


def test_offline_judge_scores_overlap_against_references():
    judge = OfflineJudge(threshold=0.3)
    good = "Customer wants to link the account to a new phone number. Agent asks for the username by direct message."
    j = grade(judge, "tweetsumm", DIALOGUE, good, references=REFERENCES)
    assert j.scores == {"customer": 1, "agent": 1, "two_sentences": 1} and not j.failed
    assert j.judge == "offline-proxy (overlap >= 0.3, not GPT-4)" and "GPT-4" in j.judge

    off_topic = "Customer loves the new playlist feature. Agent recommends a podcast about cooking."
    assert grade(judge, "tweetsumm", DIALOGUE, off_topic, REFERENCES).scores == {
        "customer": 0,
        "agent": 0,
        "two_sentences": 1,
    }
    # right customer part, wrong agent part, three sentences
    mixed = "Customer wants a new phone number on the account. Agent talks about the weather. It is sunny."
    assert grade(judge, "tweetsumm", DIALOGUE, mixed, REFERENCES).scores == {
        "customer": 1,
        "agent": 0,
        "two_sentences": 0,
    }
    assert grading.unigram_f1("the customer is here", "an agent was there") == 0.0
    assert grade(judge, "tweetsumm", DIALOGUE, "", REFERENCES).scores == {
        "customer": 0,
        "agent": 0,
        "two_sentences": 0,
    }
    # the threshold is what decides: a stricter proxy rejects the same summary
    strict = OfflineJudge(threshold=0.9)
    assert grade(strict, "tweetsumm", DIALOGUE, good, REFERENCES).scores["customer"] == 0
    assert strict.label == "offline-proxy (overlap >= 0.9, not GPT-4)"


def test_offline_judge_limits():
    judge = OfflineJudge()
    j = grade(judge, "tweetsumm", DIALOGUE, SUMMARY)
    assert j.failed and j.scores is None and j.failure == "offline judge needs reference summaries"
    assert grade(judge, "tweetsumm", DIALOGUE, SUMMARY, references=["  "]).failed
    with pytest.raises(ValueError, match="LLMJudge"):
        grade(judge, "summary_quality", DIALOGUE, SUMMARY, REFERENCES)
    with pytest.raises(ValueError, match="LLMJudge"):
        grade_many(judge, "summary_quality", [{"dialogue": DIALOGUE, "summary": SUMMARY}], progress=False)
    with pytest.raises(ValueError, match="threshold"):
        OfflineJudge(threshold=0)
    items = [
        {"dialogue": DIALOGUE, "summary": SUMMARY, "references": REFERENCES},
        {"dialogue": DIALOGUE, "summary": SUMMARY},
    ]
    df = grade_many(judge, RUBRICS["tweetsumm"], items, progress=False)
    result = summarize_grades(df, "tweetsumm")
    assert result["graded"] == 1 and result["failed"] == 1 and result["max_total"] == 3
    assert result["cost_usd"] == 0.0 and result["judge"] == judge.label


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")
def test_offline_judge_on_real_tweetsumm_references():
    """The splitter agrees with the annotators' sentences; the proxy tells matching from mismatched summaries."""
    conversations = []
    agree = total = 0
    for line in (REALDATA / "tweetsumm.valid.annotations.jsonl").read_text().splitlines():
        parts = [a["abstractive"] for a in json.loads(line)["annotations"] if a["abstractive"]]
        for sentences in parts:
            total += 1
            got = split_sentences(" ".join(sentences))
            agree += len(got) == len(sentences) and got[0] == " ".join(sentences[0].split())
        conversations.append([" ".join(s) for s in parts])
    assert total > 300 and agree / total > 0.97
    judge = OfflineJudge()
    matched = mismatched = 0
    for refs, other in zip(conversations, conversations[1:], strict=False):
        if len(refs) > 1:
            matched += judge.grade("tweetsumm", "", refs[0], refs[1:]).scores["customer"]
        mismatched += judge.grade("tweetsumm", "", refs[0], other).scores["customer"]
    assert matched > 0.5 * len(conversations) and mismatched < 0.1 * len(conversations)
