"""Grade summaries against a rubric, with an LLM judge or an offline proxy, and account for cost and failures.

A rubric is data (`Rubric` of `Criterion`s; `RUBRICS` holds the course's two: `tweetsumm`, the three
one-point checks the TWEETSUMM document asked GPT-4 to make, and `summary_quality`, the four 1-5 scales
of the SAMSum document). `LLMJudge` asks a model for one JSON object with a score and a one-sentence
reason per criterion, through the OpenAI API (Responses API) or any OpenAI-compatible server such as
vLLM, Ollama or llama.cpp (chat completions with a strict `json_schema` response format). Replies are
validated; a reply that is not valid JSON, lacks a criterion or has a score off the scale is asked for
once more, and a second bad reply, like a request that still fails after the retries, becomes a FAILED
judgment: it is counted as failed and never scored as zero. Successful judgments are cached on disk
(one JSON file each) so a re-run costs nothing; failures are not cached, so the next run tries again.
`OfflineJudge` is a free, reference-based stand-in for the `tweetsumm` rubric (word overlap with the
human summaries plus an exact two-sentence count) used when no API is configured; it is a proxy, not
GPT-4, and labels every judgment as such.

Environment variables (arguments win over them):
`TUTORLIB_JUDGE_MODEL` judge model (default `gpt-4o`; the source document used GPT-4);
`TUTORLIB_JUDGE_BASE_URL`, then `OPENAI_BASE_URL`: an OpenAI-compatible server, e.g.
`http://localhost:8000/v1` (absent: api.openai.com); `OPENAI_API_KEY`: the key (a local server without
authentication needs none). The key is sent only to the judge's server: it is never printed, logged,
cached, or left in a failure message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
import pandas as pd
from tqdm.auto import tqdm

from . import paths

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o"
OPENAI_URL = "https://api.openai.com/v1"

# ---------------------------------------------------------------------------------------------------
# Rubrics


@dataclass(frozen=True)
class Criterion:
    """One thing the judge scores: a short name (a DataFrame column), what it means, and its integer scale."""

    name: str
    description: str
    scale: tuple[int, int]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"criterion name {self.name!r} must be lower-case letters, digits and '_'")
        lo, hi = self.scale
        if not (isinstance(lo, int) and isinstance(hi, int) and lo < hi):
            raise ValueError(
                f"criterion {self.name!r} has scale {self.scale!r}; expected (low, high) integers"
            )


_RESERVED = {"id", "total", "failed", "reason", "judge", "cached", "attempts", "retries", "cost_usd"}


@dataclass(frozen=True)
class Rubric:
    """A named, versioned set of criteria plus the instructions the judge gets.

    Change `version` whenever the wording changes: it is part of the cache key, so old judgments made
    under different instructions are not silently reused.
    """

    name: str
    version: str
    instructions: str
    criteria: tuple[Criterion, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.criteria]
        if not names or len(set(names)) != len(names) or _RESERVED & set(names):
            raise ValueError(
                f"rubric {self.name!r} needs at least one criterion, unique names, none of {sorted(_RESERVED)}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.criteria)

    @property
    def max_total(self) -> int:
        """The best possible total for one summary (3 for `tweetsumm`, 20 for `summary_quality`)."""
        return sum(c.scale[1] for c in self.criteria)


RUBRICS: dict[str, Rubric] = {
    "tweetsumm": Rubric(
        name="tweetsumm",
        version="1",
        instructions=(
            "You grade machine-written summaries of customer-service conversations held on Twitter. "
            "A good summary has two sentences: the first says what the customer asked or complained about, "
            "the second how the agent responded. Compare the summary with the conversation only. Award each "
            "criterion 1 if it is met and 0 if not, and give a one-sentence reason for each score."
        ),
        criteria=(
            Criterion(
                "customer",
                "The summary describes the customer's question or complaint reasonably accurately.",
                (0, 1),
            ),
            Criterion("agent", "The summary describes the agent's response reasonably accurately.", (0, 1)),
            Criterion("two_sentences", "The summary is exactly two sentences long.", (0, 1)),
        ),
    ),
    "summary_quality": Rubric(
        name="summary_quality",
        version="1",
        instructions=(
            "You are a careful annotator of dialogue summaries. Read the conversation, then the summary, "
            "and rate the summary on each criterion from 1 (very poor) to 5 (excellent), judging each "
            "criterion on its own. Give a one-sentence reason for each score."
        ),
        criteria=(
            Criterion(
                "relevance",
                "The summary keeps the conversation's important content and leaves out redundant or "
                "unimportant detail.",
                (1, 5),
            ),
            Criterion(
                "coherence",
                "The summary is well organised: its sentences follow on from one another and build a clear "
                "whole rather than a heap of facts.",
                (1, 5),
            ),
            Criterion(
                "consistency",
                "Every fact in the summary is supported by the conversation; invented or contradicted "
                "details are penalised.",
                (1, 5),
            ),
            Criterion(
                "fluency",
                "The summary is well written: grammar, spelling, punctuation, word choice and sentence "
                "structure.",
                (1, 5),
            ),
        ),
    ),
}


def get_rubric(rubric: Rubric | str) -> Rubric:
    """Return `rubric` itself, or the rubric of that name from `RUBRICS`."""
    if isinstance(rubric, Rubric):
        return rubric
    if isinstance(rubric, str) and rubric in RUBRICS:
        return RUBRICS[rubric]
    raise ValueError(f"unknown rubric {rubric!r}; expected a Rubric or one of {sorted(RUBRICS)}")


def response_schema(rubric: Rubric | str) -> dict[str, Any]:
    """The strict JSON schema of a judge's reply: per criterion an object with a reason and an integer score.

    The reason comes before the score so that a model writing left to right states its grounds first.
    Scores are an `enum` of the allowed integers: grammar-constrained local servers and OpenAI's strict
    mode both honour it, so an off-scale score is rare (it is still checked).
    """
    rubric = get_rubric(rubric)
    properties = {
        c.name: {
            "type": "object",
            "description": c.description,
            "properties": {
                "reason": {"type": "string", "description": "One sentence explaining the score."},
                "score": {"type": "integer", "enum": list(range(c.scale[0], c.scale[1] + 1))},
            },
            "required": ["reason", "score"],
            "additionalProperties": False,
        }
        for c in rubric.criteria
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(rubric.names),
        "additionalProperties": False,
    }


def render_prompt(rubric: Rubric | str, dialogue: str, summary: str) -> str:
    """The user message a judge receives: the criteria with their scales, the conversation and the summary."""
    rubric = get_rubric(rubric)
    criteria = "\n".join(
        f"- {c.name} (integer {c.scale[0]} to {c.scale[1]}): {c.description}" for c in rubric.criteria
    )
    return (
        f"Criteria:\n{criteria}\n\n"
        f"Conversation:\n<<<\n{dialogue.strip()}\n>>>\n\n"
        f"Summary:\n<<<\n{summary.strip()}\n>>>\n\n"
        'Reply with one JSON object only, with one key per criterion, each {"reason": "<one sentence>", '
        '"score": <integer>}.'
    )


# ---------------------------------------------------------------------------------------------------
# Judgments


@dataclass
class Judgment:
    """The outcome of grading one summary.

    `scores` is None when `failed`; `failure` then says why (a bad reply twice, or the name of the error
    that outlived the retries). `attempts` counts the times the judge was asked (2 when the first reply
    was unusable), `retries` the extra requests after transient errors (429, 5xx, timeouts, connection),
    so the server saw `attempts + retries` requests. Tokens are those spent by this call: 0 when the
    judgment came from the cache (`cached`). `judge` names the judge, e.g. "llm:gpt-4o@api.openai.com".
    """

    scores: dict[str, int] | None
    reasons: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    failure: str | None = None
    attempts: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    judge: str = ""

    @property
    def total(self) -> int | None:
        """Sum of the criterion scores, None for a failed judgment (a failure is not a zero)."""
        return None if self.scores is None else sum(self.scores.values())


def _failed(judge: str, reason: str, **counts: int) -> Judgment:
    log.warning("judgment failed (%s): %s", judge, reason)
    return Judgment(scores=None, failed=True, failure=reason, judge=judge, **counts)


def parse_reply(text: str, rubric: Rubric | str) -> tuple[dict[str, int], dict[str, str]]:
    """Check a judge's reply against the rubric; return (scores, reasons) or raise ValueError saying what is wrong."""
    rubric = get_rubric(rubric)
    body = text.strip()
    # Local models without constrained decoding like to wrap JSON in a Markdown fence.
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    if fence:
        body = fence.group(1)
    if not body:
        raise ValueError("the reply was empty")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the reply is a JSON {type(data).__name__}, expected an object")
    missing = [name for name in rubric.names if name not in data]
    if missing:
        raise ValueError(f"criterion missing from the reply: {', '.join(missing)}")
    scores: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for c in rubric.criteria:
        entry = data[c.name]
        score = entry.get("score") if isinstance(entry, dict) else None
        if isinstance(score, float) and score.is_integer():
            score = int(score)
        if isinstance(score, bool) or not isinstance(score, int):
            raise ValueError(f"the score for {c.name} is {score!r}, expected an integer")
        lo, hi = c.scale
        if not lo <= score <= hi:
            raise ValueError(f"the score for {c.name} is {score}, outside its scale {lo} to {hi}")
        scores[c.name] = score
        reasons[c.name] = str(entry.get("reason", "")).strip()
    return scores, reasons


# ---------------------------------------------------------------------------------------------------
# Secrets

_BEARER = re.compile(r"(?i)bearer\s+[^\s'\",]+")
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")


def _redact(text: str, secret: str | None) -> str:
    """Remove the API key (and anything that looks like a key or bearer token) from text we show or store."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", _BEARER.sub("Bearer [redacted]", text))


# ---------------------------------------------------------------------------------------------------
# Prices

# USD per 1M tokens (input, output), as of writing: prices change, check https://openai.com/api/pricing
# before quoting a cost. Only applied when talking to api.openai.com.
PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4": (30.00, 60.00),
}
PRICE_NOTE = "as of writing, check the pricing page"
LOCAL_NOTE = "local/unknown"


def _table_price(model: str) -> tuple[float, float] | None:
    """Price of a model or of one of its dated snapshots ("gpt-4o-2024-08-06", "gpt-4-0613")."""
    for name, price in PRICES_PER_1M.items():
        if model == name or re.fullmatch(re.escape(name) + r"-\d{4}(-\d{2}-\d{2})?", model):
            return price
    return None


# ---------------------------------------------------------------------------------------------------
# LLM judge


class _GiveUp(Exception):
    """A request failed for good: a non-transient API error, or a transient one past `max_retries`."""

    def __init__(self, reason: str, retries: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retries = retries


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is a subclass
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class LLMJudge:
    """Grade with a language model behind the OpenAI API or an OpenAI-compatible server.

    Arguments left as None come from the environment: `model` from `TUTORLIB_JUDGE_MODEL` (default
    "gpt-4o"), `base_url` from `TUTORLIB_JUDGE_BASE_URL` then `OPENAI_BASE_URL` (absent: api.openai.com),
    `api_key` from `OPENAI_API_KEY` (with a base URL and no key, the placeholder "not-needed" is sent,
    which local servers ignore). `api="auto"` uses the Responses API on api.openai.com and chat
    completions with a strict `json_schema` response format elsewhere (what vLLM, Ollama and llama.cpp
    serve). Sampling is at temperature 0. The SDK's own retries are off (`max_retries=0`) so this class
    can count its retries: up to `max_retries` per request after a 429, 5xx, timeout or connection
    error, waiting `backoff * 2**n` seconds (or the server's Retry-After, capped at `max_backoff`).
    Judgments are cached under `cache_dir` (default `paths.cache_dir()/"judgments"`). `price_per_1k`
    (USD per 1000 input, output tokens) overrides the built-in price table.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        api: Literal["auto", "chat", "responses"] = "auto",
        max_retries: int = 4,
        cache_dir: str | Path | None = None,
        price_per_1k: tuple[float, float] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_output_tokens: int = 800,
    ) -> None:
        if api not in ("auto", "chat", "responses"):
            raise ValueError(f"api={api!r}; expected 'auto', 'chat' or 'responses'")
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("max_retries and backoff must be >= 0 and timeout > 0")
        self.model = model or os.environ.get("TUTORLIB_JUDGE_MODEL") or DEFAULT_MODEL
        base = base_url or os.environ.get("TUTORLIB_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.base_url = (base or OPENAI_URL).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not echoed: a malformed URL may carry credentials.
            raise ValueError("the judge base URL must be an http(s) URL such as http://localhost:8000/v1")
        # hostname[:port] only: user:password@ in a URL must not reach labels, cache keys or logs.
        self.host = parts.hostname + (f":{parts.port}" if parts.port else "")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base is None:
                raise ValueError(
                    "LLMJudge needs an API key for api.openai.com: set OPENAI_API_KEY, or pass base_url= "
                    "(or set TUTORLIB_JUDGE_BASE_URL) for a local OpenAI-compatible server"
                )
            key = "not-needed"
        self._api_key = key
        self.api = api if api != "auto" else ("responses" if self.host == "api.openai.com" else "chat")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_output_tokens = int(max_output_tokens)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "judgments"
        if price_per_1k is not None:
            self.price_per_1m: tuple[float, float] | None = (price_per_1k[0] * 1000, price_per_1k[1] * 1000)
            self.price_note = "given by caller"
        elif self.host == "api.openai.com" and _table_price(self.model):
            self.price_per_1m, self.price_note = _table_price(self.model), PRICE_NOTE
        else:
            self.price_per_1m, self.price_note = None, LOCAL_NOTE
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=0)

    @property
    def label(self) -> str:
        return f"llm:{self.model}@{self.host}"

    def __repr__(self) -> str:
        return f"LLMJudge({self.label!r}, api={self.api!r})"

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """Estimated USD for these tokens, None when the price is unknown (local servers, unlisted models)."""
        if self.price_per_1m is None:
            return None
        return (input_tokens * self.price_per_1m[0] + output_tokens * self.price_per_1m[1]) / 1e6

    # -- cache ------------------------------------------------------------------------------------

    def cache_key(self, rubric: Rubric, dialogue: str, summary: str) -> str:
        fields = [self.model, self.host, rubric.name, rubric.version, dialogue, summary]
        return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()

    def _load(self, key: str, rubric: Rubric) -> Judgment | None:
        """The cached judgment for `key`, or None when there is none or it is unreadable or off-rubric."""
        path = self.cache_dir / f"{key}.json"
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))["judgment"]
            scores = {k: int(v) for k, v in stored["scores"].items()}
            if set(scores) != set(rubric.names):
                raise ValueError("criteria differ from the rubric")
            return Judgment(
                scores=scores, reasons=dict(stored["reasons"]), cached=True, judge=stored["judge"]
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.info("ignoring unusable cached judgment %s", path.name)
            return None

    def _store(self, key: str, rubric: Rubric, judgment: Judgment) -> None:
        record = {"rubric": rubric.name, "rubric_version": rubric.version, "judgment": asdict(judgment)}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a concurrent reader or an interrupted run never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=1)
            os.replace(tmp, self.cache_dir / f"{key}.json")
        except OSError as exc:  # a paid-for judgment is still returned when the cache cannot be written
            log.warning("could not cache a judgment in %s: %s", self.cache_dir, type(exc).__name__)

    # -- requests ---------------------------------------------------------------------------------

    def _send(self, rubric: Rubric, prompt: str) -> tuple[str, int, int]:
        """One request; returns (reply text, input tokens, output tokens)."""
        schema = response_schema(rubric)
        if self.api == "responses":
            resp = self._client.responses.create(
                model=self.model,
                instructions=rubric.instructions,
                input=prompt,
                temperature=0,
                max_output_tokens=self.max_output_tokens,
                store=False,
                text={
                    "format": {"type": "json_schema", "name": rubric.name, "schema": schema, "strict": True}
                },
            )
            usage = resp.usage
            return (
                resp.output_text or "",
                usage.input_tokens if usage else 0,
                usage.output_tokens if usage else 0,
            )
        resp = self._client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": rubric.instructions},
                {"role": "user", "content": prompt},
            ],
            temperature=0,
            max_completion_tokens=self.max_output_tokens,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": rubric.name, "schema": schema, "strict": True},
            },
        )
        usage = resp.usage
        text = resp.choices[0].message.content if resp.choices else None
        return text or "", usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0

    def _send_with_retries(self, rubric: Rubric, prompt: str) -> tuple[str, int, int, int]:
        """`_send` with exponential backoff on transient errors; returns its result plus the retry count."""
        retries = 0
        while True:
            try:
                return (*self._send(rubric, prompt), retries)
            except openai.OpenAIError as exc:
                reason = f"{type(exc).__name__}: {_redact(str(exc), self._api_key)}"[:300]
                if not _is_transient(exc) or retries >= self.max_retries:
                    raise _GiveUp(reason, retries) from None
                delay = self.backoff * 2**retries * (1 + 0.25 * random.random())  # jitter spreads threads
                delay = min(max(delay, _retry_after(exc) or 0.0), self.max_backoff)
                retries += 1
                log.info(
                    "%s: %s; retry %d/%d in %.2f s", self.label, reason, retries, self.max_retries, delay
                )
                time.sleep(delay)

    def grade(
        self, rubric: Rubric | str, dialogue: str, summary: str, references: Sequence[str] | None = None
    ) -> Judgment:
        """Grade one summary (references are not shown to the LLM: it judges against the conversation)."""
        rubric = get_rubric(rubric)
        key = self.cache_key(rubric, dialogue, summary)
        cached = self._load(key, rubric)
        if cached is not None:
            return cached
        counts = {"attempts": 0, "retries": 0, "input_tokens": 0, "output_tokens": 0}
        prompt = render_prompt(rubric, dialogue, summary)
        problem = None
        for _ in range(2):  # the first ask, and one more after an unusable reply
            counts["attempts"] += 1
            message = prompt
            if problem:
                message += f"\n\nYour previous reply could not be used: {problem}. Reply again with the JSON object only."
            try:
                text, n_in, n_out, retries = self._send_with_retries(rubric, message)
            except _GiveUp as exc:
                counts["retries"] += exc.retries
                return _failed(self.label, exc.reason, **counts)
            counts["retries"] += retries
            counts["input_tokens"] += n_in
            counts["output_tokens"] += n_out
            try:
                scores, reasons = parse_reply(text, rubric)
            except ValueError as exc:
                problem = str(exc)
                log.info("%s: unusable reply (%s)", self.label, problem)
                continue
            judgment = Judgment(scores=scores, reasons=reasons, judge=self.label, **counts)
            self._store(key, rubric, judgment)
            return judgment
        return _failed(self.label, f"unusable reply twice: {problem}", **counts)


# ---------------------------------------------------------------------------------------------------
# Offline proxy judge: sentence splitting and word overlap

# Everything from the first end-of-summary marker on is generation debris ("<END_OF_SECOND_SENTENCE>
# <END_SENTENCE>>"") <END_OF_SECOND"), including truncated markers without a closing ">".
_MARKER = re.compile(r"<\s*/?\s*END", re.I)
# Titles always precede a name, so a full stop after them never ends a sentence.
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "mt", "gen", "capt", "rev", "hon"}
# These may end a sentence; they do when the next word is capitalised.
_ABBREVIATIONS = set("etc vs approx inc ltd co corp dept no nos est misc fig".split())
_NEVER_FINAL = {"e.g", "i.e", "cf", "viz"}
_CANDIDATE = re.compile(r"(\.{2,}|…|[.!?]+)([\"'”’)\]]*)(?=\s|$)")


def strip_markers(text: str) -> str:
    """Cut generated text at its first `<END...>` marker (any variant, closed or truncated)."""
    match = _MARKER.search(text)
    return text[: match.start()] if match else text


def split_sentences(text: str) -> list[str]:
    """Split a summary into sentences after cutting end markers.

    A sentence ends at ".", "!" or "?" followed by whitespace or the end of the text. Full stops inside
    a token ("8.42", "5.30pm", "www.example.co.uk/a.html") never qualify because no space follows.
    After "e.g." / "i.e." and titles ("Mr.", "Dr.") no sentence ends; after other abbreviations ("etc.",
    "U.S.", "a.m.") and after an ellipsis one ends only if the next word starts with a capital letter.
    Pieces without a letter or digit (stray quotes, brackets) are dropped.
    """
    text = " ".join(strip_markers(text).split())
    sentences: list[str] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        end = m.end()
        following = text[end:].lstrip()
        next_upper = following[:1].isupper()
        punct = m.group(1)
        if not following:
            pass  # the end of the text ends the last sentence
        elif punct.startswith("..") or punct == "…":
            if not next_upper:
                continue
        elif punct == ".":
            word = text[: m.start()].rsplit(" ", 1)[-1].lower().lstrip("(\"'")
            if word in _NEVER_FINAL or word in _TITLES:
                continue
            dotted = re.fullmatch(r"(?:[a-z]\.)+[a-z]", word) is not None  # u.s, a.m, p.m
            if (word in _ABBREVIATIONS or dotted) and not next_upper:
                continue
        sentences.append(text[start:end].strip())
        start = end
    sentences.append(text[start:].strip())
    return [s for s in sentences if re.search(r"\w", s)]


_STOP_WORDS = set(
    """a about above after again against all also am an and any are as at be been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only
    or other our ours out over own same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours us s t re ve ll d m o y
    customer customers agent agents""".split()
)  # role words are dropped too: every reference sentence starts with one, so they would inflate overlap


def _content_words(text: str) -> Counter[str]:
    words = re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))
    return Counter(w for w in words if w not in _STOP_WORDS)


def unigram_f1(candidate: str, reference: str) -> float:
    """F1 of the content words two texts share (lower-cased, stop words and role words removed, no stemming)."""
    cand, ref = _content_words(candidate), _content_words(reference)
    common = sum((cand & ref).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(cand.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def _parts(text: str) -> tuple[str, str]:
    """(customer part, agent part): the first sentence, and the rest."""
    sentences = split_sentences(text)
    return (sentences[0] if sentences else ""), " ".join(sentences[1:])


class OfflineJudge:
    """A free, reference-based PROXY for the `tweetsumm` rubric when no LLM judge is available.

    two_sentences: 1 if `split_sentences` finds exactly two sentences. customer / agent: the summary's
    first sentence (customer part) and the rest (agent part) are compared with the first sentence and the
    rest of each reference summary by unigram F1 of content words; the best reference counts and a score
    of at least `threshold` earns the point. Word overlap is not understanding: these scores are not
    comparable with GPT-4's, which is why every judgment is labelled "offline-proxy (..., not GPT-4)".
    """

    price_per_1m = None
    price_note = "offline: no API calls"

    def __init__(self, threshold: float = 0.3) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r}; expected a number in (0, 1]")
        self.threshold = threshold

    @property
    def label(self) -> str:
        return f"offline-proxy (overlap >= {self.threshold:g}, not GPT-4)"

    def __repr__(self) -> str:
        return f"OfflineJudge(threshold={self.threshold:g})"

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        return 0.0

    def check_rubric(self, rubric: Rubric | str) -> Rubric:
        """The rubric, if this judge can apply it (only `tweetsumm`); else a ValueError saying what can."""
        rubric = get_rubric(rubric)
        if rubric.name != "tweetsumm":
            raise ValueError(
                f"OfflineJudge only implements the 'tweetsumm' rubric; {rubric.name!r} needs judgement "
                "that word overlap cannot give: use an LLMJudge (set OPENAI_API_KEY or a base URL)"
            )
        return rubric

    def grade(
        self, rubric: Rubric | str, dialogue: str, summary: str, references: Sequence[str] | str | None = None
    ) -> Judgment:
        """Grade one summary against its reference summaries (the dialogue is not used)."""
        rubric = self.check_rubric(rubric)
        refs = [references] if isinstance(references, str) else list(references or [])
        refs = [r for r in refs if isinstance(r, str) and r.strip()]
        if not refs:
            return _failed(self.label, "offline judge needs reference summaries")
        customer, agent = _parts(summary)
        ref_parts = [_parts(r) for r in refs]
        best_customer = max(unigram_f1(customer, c) for c, _ in ref_parts)
        best_agent = max(unigram_f1(agent, a) for _, a in ref_parts)
        n_sentences = len(split_sentences(summary))
        ok = {
            "customer": best_customer >= self.threshold,
            "agent": best_agent >= self.threshold,
            "two_sentences": n_sentences == 2,
        }
        reasons = {
            "customer": f"Customer part overlaps the best reference with F1 {best_customer:.2f}.",
            "agent": f"Agent part overlaps the best reference with F1 {best_agent:.2f}.",
            "two_sentences": f"The summary has {n_sentences} sentence{'s' if n_sentences != 1 else ''}.",
        }
        return Judgment(
            scores={k: int(v) for k, v in ok.items()}, reasons=reasons, attempts=1, judge=self.label
        )


# ---------------------------------------------------------------------------------------------------
# Choosing a judge, grading one or many, summarising


def choose_judge(verbose: bool = True) -> LLMJudge | OfflineJudge:
    """An `LLMJudge` when OPENAI_API_KEY or a judge base URL is set in the environment, else an `OfflineJudge`."""
    env = os.environ
    base = env.get("TUTORLIB_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL")
    if env.get("OPENAI_API_KEY") or base:
        judge: LLMJudge | OfflineJudge = LLMJudge()
        why = "a judge base URL is set" if base else "OPENAI_API_KEY is set"
        message = f"Grading with {judge.label} ({judge.api} API) because {why}."
    else:
        judge = OfflineJudge()
        message = (
            f"Grading with the {judge.label} because neither OPENAI_API_KEY nor a judge base URL is set: "
            "its scores are word-overlap proxies, not comparable with the document's GPT-4 grades."
        )
    if verbose:
        print(message)
    return judge


def grade(
    judge: LLMJudge | OfflineJudge,
    rubric: Rubric | str,
    dialogue: str,
    summary: str,
    references: Sequence[str] | str | None = None,
) -> Judgment:
    """Grade one summary of `dialogue` with `judge` under `rubric` (a Rubric or a name in RUBRICS)."""
    if not isinstance(dialogue, str) or not isinstance(summary, str):
        raise ValueError(
            f"dialogue and summary must be strings; got {type(dialogue).__name__} and {type(summary).__name__}"
        )
    return judge.grade(get_rubric(rubric), dialogue, summary, references)


def _grade_item(judge: LLMJudge | OfflineJudge, rubric: Rubric, item: Mapping[str, Any]) -> Judgment:
    try:
        return grade(judge, rubric, item["dialogue"], item["summary"], item.get("references"))
    except Exception as exc:  # one broken item must not lose the rest of a paid batch
        secret = getattr(judge, "_api_key", None)
        return _failed(judge.label, f"{type(exc).__name__}: {_redact(str(exc), secret)}"[:300])


def grade_many(
    judge: LLMJudge | OfflineJudge,
    rubric: Rubric | str,
    items: Iterable[Mapping[str, Any]],
    *,
    concurrency: int = 4,
    progress: bool = True,
) -> pd.DataFrame:
    """Grade many summaries, `concurrency` at a time; one DataFrame row per item, in the items' order.

    Each item is a mapping with `dialogue`, `summary`, and optionally `references` and `id`. Columns:
    `id`, one per criterion and `total` (nullable integers: missing, never 0, for a failed item),
    `failed`, `reason` (the failure, or the criterion reasons joined), `judge`, `cached`, `attempts`,
    `retries`, `input_tokens`, `output_tokens`, `cost_usd` (NaN when the price is unknown).
    """
    rubric = get_rubric(rubric)
    items = list(items)
    for i, item in enumerate(items):
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("dialogue"), str)
            or not isinstance(item.get("summary"), str)
        ):
            raise ValueError(
                f"item {i} must be a mapping with string 'dialogue' and 'summary'; got {item!r:.120}"
            )
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}; expected at least 1")
    if isinstance(judge, OfflineJudge):
        judge.check_rubric(rubric)  # fail once, up front, rather than once per item
    results: list[Judgment | None] = [None] * len(items)
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=len(items), desc=f"grading: {judge.label}", disable=not progress) as bar,
    ):
        futures = {pool.submit(_grade_item, judge, rubric, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    rows = []
    for i, (item, j) in enumerate(zip(items, results, strict=True)):
        assert j is not None
        cost = judge.estimate_cost(j.input_tokens, j.output_tokens)
        scores = j.scores or {}
        reason = j.failure if j.failed else "; ".join(f"{k}: {v}" for k, v in j.reasons.items())
        rows.append(
            {
                "id": item.get("id", i),
                **{name: scores.get(name, pd.NA) for name in rubric.names},
                "total": pd.NA if j.total is None else j.total,
                "failed": j.failed,
                "reason": reason,
                "judge": j.judge,
                "cached": j.cached,
                "attempts": j.attempts,
                "retries": j.retries,
                "input_tokens": j.input_tokens,
                "output_tokens": j.output_tokens,
                "cost_usd": math.nan if cost is None else cost,
            }
        )
    columns = ["id", *rubric.names, "total", "failed", "reason", "judge", "cached", "attempts", "retries"]
    df = pd.DataFrame(rows, columns=[*columns, "input_tokens", "output_tokens", "cost_usd"])
    df = df.astype({name: "Int64" for name in [*rubric.names, "total"]})
    df.attrs.update(rubric=rubric.name, price_note=judge.price_note)
    return df


def summarize_grades(df: pd.DataFrame, rubric: Rubric | str) -> dict[str, Any]:
    """Totals of a `grade_many` table: per-criterion sums and their maxima over the GRADED items.

    Failed items are counted (`failed`) and left out of every score and maximum, so "67/150" always means
    67 points out of what the graded summaries could have earned. Tokens and cost include failed requests
    (they were paid for); `cost_usd` is None when the price is unknown and `price_note` says how far to
    trust it.
    """
    rubric = get_rubric(rubric)
    needed = {*rubric.names, "failed", "judge", "cached", "input_tokens", "output_tokens", "cost_usd"}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise ValueError(f"not a grade_many table for rubric {rubric.name!r}: missing columns {missing}")
    failed = df["failed"].astype(bool)
    ok = df[~failed]
    criteria = {name: int(ok[name].sum()) for name in rubric.names}
    costs = pd.to_numeric(df["cost_usd"], errors="coerce")
    cost = float(costs.sum()) if costs.notna().any() else None
    return {
        "rubric": rubric.name,
        "judge": ", ".join(sorted(set(df["judge"]))),
        "items": len(df),
        "graded": len(ok),
        "failed": int(failed.sum()),
        "cached": int(df["cached"].sum()),
        "criteria": criteria,
        "criteria_max": {c.name: c.scale[1] * len(ok) for c in rubric.criteria},
        "total": sum(criteria.values()),
        "max_total": rubric.max_total * len(ok),
        "input_tokens": int(df["input_tokens"].sum()),
        "output_tokens": int(df["output_tokens"].sum()),
        "cost_usd": cost,
        "price_note": df.attrs.get("price_note") or (LOCAL_NOTE if cost is None else PRICE_NOTE),
    }
