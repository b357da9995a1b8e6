"""Rubric grading by an LLM judge on any OpenAI-compatible server or a free offline proxy.
No silent 0s."""

import hashlib
import json
import re
import tomllib
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
import pandas as pd
import pydantic
from tqdm.auto import tqdm

from tutorlib import env, paths
from tutorlib.metrics import sentences


@dataclass(frozen=True)
class Criterion:
    """One thing the judge scores: a column name, its meaning and its integer scale (low, high)."""

    name: str
    description: str
    scale: tuple[int, int] = (0, 1)


@dataclass(frozen=True)
class Rubric:
    """The judge's instructions and criteria, all in the cache key: rewording re-grades."""

    name: str
    instructions: str
    criteria: tuple[Criterion, ...]


def _rubrics() -> dict[str, Rubric]:
    text = resources.files("tutorlib").joinpath("rubrics.toml").read_text(encoding="utf-8")
    rubrics = {}
    for name, entry in tomllib.loads(text).items():
        scale = tuple(entry["scale"])
        criteria = tuple(Criterion(c, about, scale) for c, about in entry["criteria"].items())
        rubrics[name] = Rubric(name, entry["instructions"], criteria)
    return rubrics


RUBRICS: dict[str, Rubric] = _rubrics()  # rubrics.toml: each rubric's instructions and criteria


def _rubric(rubric: Rubric | str) -> Rubric:
    if isinstance(rubric, Rubric) or rubric in RUBRICS:
        return RUBRICS.get(rubric, rubric)  # type: ignore[arg-type]
    raise ValueError(f"unknown rubric {rubric!r}; expected a Rubric or one of {sorted(RUBRICS)}")


def _reply_model(rubric: Rubric) -> type[pydantic.BaseModel]:
    """Reply shape: per criterion a reason (first, so the model states its grounds) and a score (an
    integer `enum` in the JSON schema); `additionalProperties` false, as strict mode requires."""
    strict = pydantic.ConfigDict(extra="forbid")
    fields: dict[str, Any] = {}
    for c in rubric.criteria:
        score = Literal[tuple(range(c.scale[0], c.scale[1] + 1))]
        fields[c.name] = pydantic.create_model(c.name, __config__=strict, reason=str, score=score)
    return pydantic.create_model(rubric.name, __config__=strict, **fields)


# USD per 1M tokens (input, output), dated in prices.toml; prices change: openai.com/api/pricing
_PRICES = tomllib.loads(resources.files("tutorlib").joinpath("prices.toml").read_text("utf-8"))
_OPENAI = "https://api.openai.com/v1"
_BASE_URLS = ("TUTORLIB_JUDGE_BASE_URL", "OPENAI_BASE_URL")  # the first one set wins
_COUNTS = {"input_tokens": 0, "output_tokens": 0, "retries": 0, "cached": False}


def _base_url(explicit: str | None) -> tuple[str, str | None]:
    """(where it came from, the judge server's URL): the one place the server is looked up."""
    if explicit:
        return "base_url", explicit
    return next(((v, url) for v in _BASE_URLS if (url := env.secret(v))), ("", None))


def messages(rubric: Rubric | str, dialogue: str, summary: str) -> list[dict[str, str]]:
    """The judge's chat request: the rubric's instructions as the system message, then its
    criteria, the dialogue and the summary, each fenced so that a summary cannot pose as an
    instruction."""
    rubric = _rubric(rubric)
    scale = "".join(
        f"- {c.name} ({c.scale[0]}-{c.scale[1]}): {c.description}\n" for c in rubric.criteria
    )
    prompt = (
        f"Criteria:\n{scale}\nConversation:\n<<<{dialogue.strip()}>>>\n\nSummary:\n<<<{summary}>>>"
    )
    return [
        {"role": "system", "content": rubric.instructions},
        {"role": "user", "content": prompt},
    ]


class JudgmentCache:
    """Judgments on disk, one JSON file each, written whole. Graded once, paid once."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def check(self) -> None:
        """Raise before the first paid request if judgments could not be kept."""
        probe = self.folder / ".writable"
        try:
            paths.write_atomic(probe, "ok")
            probe.unlink()
        except OSError as err:
            raise OSError(
                f"the judge's cache folder {self.folder} cannot be written ({err.strerror}); every "
                "judgment would be paid for again on the next run. Set TUTORLIB_CACHE to a "
                "writable folder, or pass cache_dir= to LLMJudge"
            ) from None

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not graded yet, or a damaged file: grade (again)
            return None

    def put(self, key: str, judgment: Mapping[str, Any]) -> None:
        """Keep a judgment; a failed write is a warning, since the judgment itself is in hand."""
        try:
            paths.write_atomic(self.folder / f"{key}.json", json.dumps(judgment))
        except OSError as err:
            lost = f"judgment not cached in {self.folder} ({err}); kept for this run only"
            warnings.warn(lost, stacklevel=2)


class LLMJudge:
    """A judge on the OpenAI API or an OpenAI-compatible server (vLLM, Ollama). Arguments left
    out come from TUTORLIB_JUDGE_MODEL (gpt-4o), TUTORLIB_JUDGE_BASE_URL or OPENAI_BASE_URL, and
    OPENAI_API_KEY (kept as `api_key`; results refuse to write a record holding it)."""

    def __init__(
        self, model=None, base_url=None, api_key=None, max_retries=5, timeout=60.0, cache_dir=None
    ):
        self.model = model or env.secret("TUTORLIB_JUDGE_MODEL") or "gpt-4o"
        origin, base = _base_url(base_url)
        self.api_key = (api_key or "").strip() or env.secret("OPENAI_API_KEY")
        if not self.api_key and not base:
            raise ValueError(
                "LLMJudge needs OPENAI_API_KEY, or base_url= / TUTORLIB_JUDGE_BASE_URL"
            )
        self.base_url = (base or _OPENAI).rstrip("/")
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:  # a URL may hold credentials:
            expected = "expected one such as http://localhost:8000/v1"  # it is never echoed
            raise ValueError(f"{origin} is not an http(s) URL; {expected}")
        host = url.hostname + (f":{url.port}" if url.port else "")  # without any user:password@
        on_openai = self.base_url == _OPENAI
        self.label = f"{self.model} (OpenAI)" if on_openai else f"{self.model} @ {host}"
        self.cache = JudgmentCache(cache_dir or paths.cache_dir() / "judgments")
        snapshot = re.sub(r"-\d{4}(-\d\d-\d\d)?$", "", self.model)  # gpt-4o-2024-08-06: gpt-4o
        price = _PRICES["judge"].get(snapshot) if on_openai else None
        self.price = None if price is None else tuple(price)
        self.price_note = "cost unknown: local or unlisted"
        if self.price:
            self.price_note = f"prices as of {_PRICES['as_of'][:4]}"
        # A server without authentication ignores the key; the SDK wants one all the same.
        self._client = openai.OpenAI(
            api_key=self.api_key or "none",
            base_url=self.base_url,
            max_retries=max_retries,
            timeout=timeout,
        )

    def grade(
        self, rubric: Rubric, dialogue: str, summary: str, references: Any = None
    ) -> dict[str, Any]:
        """Grade one summary against its conversation (not the references); judgments are cached
        on disk, keyed by everything that shapes them except the key."""
        fields = json.dumps([self.model, self.base_url, asdict(rubric), dialogue, summary])
        key = hashlib.sha256(fields.encode()).hexdigest()
        if (kept := self.cache.get(key)) is not None:
            return {**kept, "cached": True}
        result = self._ask(rubric, messages(rubric, dialogue, summary))
        if not result["failed"]:
            scores = {k: v for k, v in result.items() if k not in _COUNTS}
            self.cache.put(key, scores)
        return result

    def _ask(self, rubric: Rubric, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Request, and check the reply with pydantic (JSON, every criterion, each score on its
        scale). An invalid reply is asked once more; a second one, or an error past the SDK's
        retries, is a failed judgment, never a score."""
        counts = {"input_tokens": 0, "output_tokens": 0, "retries": 0}
        reply_model = _reply_model(rubric)
        schema = {"name": rubric.name, "schema": reply_model.model_json_schema(), "strict": True}
        request = {"model": self.model, "temperature": 0, "max_completion_tokens": 800}
        request["response_format"] = {"type": "json_schema", "json_schema": schema}
        why = ""
        for _ in range(2):
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    messages=messages, **request
                )
            except openai.OpenAIError as exc:
                return {"failed": True, "reason": self._failure(exc, counts), **counts}
            reply = raw.parse()
            counts["retries"] += raw.retries_taken
            counts["input_tokens"] += reply.usage.prompt_tokens if reply.usage else 0
            counts["output_tokens"] += reply.usage.completion_tokens if reply.usage else 0
            text = (reply.choices[0].message.content if reply.choices else None) or ""
            try:
                grades = reply_model.model_validate_json(text).model_dump()
            except pydantic.ValidationError as exc:
                why = "; ".join(": ".join(map(str, (*e["loc"], e["msg"]))) for e in exc.errors())
                again = (
                    f"That reply could not be used: {why}. Reply again with the JSON object only."
                )
                messages = [*messages, {"role": "assistant", "content": text}]
                messages.append({"role": "user", "content": again})
                continue
            reason = "; ".join(f"{name}: {g['reason']}" for name, g in grades.items())
            scores = {name: g["score"] for name, g in grades.items()}
            return {**scores, "failed": False, "reason": reason, **counts}
        return {"failed": True, "reason": f"invalid reply twice: {why}", **counts}

    def _failure(self, exc: openai.OpenAIError, counts: dict[str, int]) -> str:
        """The reason a request failed, with the key redacted (a server may echo it)."""
        # After a failure the SDK tells its retry count only in a header of the last request.
        sent = getattr(exc, "request", None)
        counts["retries"] += int(sent.headers.get("x-stainless-retry-count", 0)) if sent else 0
        reason = f"{type(exc).__name__}: {exc}"
        return reason.replace(self.api_key, "[redacted]") if self.api_key else reason


# Function words, and the role words every reference starts with: shared, they inflate overlap.
_STOP = set(
    """a an the and or but of to in on at for from with by about as is are was were be been it its
    this that he she they them his her their we you your i my not no do does did has have had will
    would can could customer customers agent agents""".split()
)


def _overlap(x: str, y: str, precision: bool = False) -> float:
    """F1 of the content words two texts share (lower-cased, no stemming), or with `precision` the
    share of x's found in y."""
    a, b = (
        Counter(w for w in re.findall(r"[a-z0-9]+", t.lower()) if w not in _STOP) for t in (x, y)
    )
    common = sum((a & b).values())
    return common / max(a.total(), 1) if precision else 2 * common / max(a.total() + b.total(), 1)


class OfflineJudge:
    """A free PROXY for the tweetsumm rubric. two_sentences counts `metrics.sentences`; customer /
    agent compare the summary's first sentence / the rest with each reference's by content-word F1
    (best >= threshold), or, given `references=None`, by the share of their content words that
    side of the conversation uses."""

    api_key, price, price_note = None, (0.0, 0.0), "offline proxy: no API calls"

    def __init__(self, threshold: float = 0.3) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r}; expected a number in (0, 1]")
        self.threshold = threshold
        self.label = f"offline proxy (word overlap >= {threshold:g}, not GPT-4)"

    def grade(
        self, rubric: Rubric, dialogue: str, summary: str, references: Any = None
    ) -> dict[str, Any]:
        """Grade one summary against its human references, or, with `references=None`, against
        the dialogue."""
        if rubric.name != "tweetsumm":  # counted as failed, so a notebook without an LLM still runs
            why = f"the offline proxy cannot judge {rubric.name!r}: it needs an LLM judge"
            return {"failed": True, "reason": why}
        given = [references] if isinstance(references, str) else references or []
        refs = [r for r in given if r.strip()]
        if not refs and references is not None:
            return {"failed": True, "reason": "offline judge needs reference summaries"}
        split = [(" ".join(s[:1]), " ".join(s[1:])) for s in map(sentences, [summary, *refs])]
        (customer, agent), *parts = split
        if references is None:  # no human summary (synthetic data): does each side say it?
            said = {"customer": customer, "agent": agent}
            best = {role: _overlap(said[role], _side(dialogue, role), True) for role in said}
        else:
            best = {"customer": max(_overlap(customer, c) for c, _ in parts)}
            best["agent"] = max(_overlap(agent, a) for _, a in parts)
        count = len(sentences(summary))
        scores = {k: int(v >= self.threshold) for k, v in best.items()}
        overlap = f"overlap customer {best['customer']:.2f}, agent {best['agent']:.2f}"
        reason = f"{overlap}; {count} sentence(s)"
        return {**scores, "two_sentences": int(count == 2), "failed": False, "reason": reason}


def _side(dialogue: str, role: str) -> str:
    """What one side ('customer' or 'agent') says in a 'Customer: ...' / 'Agent: ...' dialogue."""
    lines = dialogue.splitlines()
    return " ".join(t.partition(":")[2] for t in lines if t.lower().startswith(role + ":"))


def choose_judge(verbose: bool = True) -> LLMJudge | OfflineJudge:
    """An LLMJudge if OPENAI_API_KEY or a judge base URL is set, else an OfflineJudge; says which
    and why."""
    base, key = _base_url(None)[1], env.secret("OPENAI_API_KEY")
    judge = LLMJudge() if base or key else OfflineJudge()
    why = "a judge base URL is set" if base else "OPENAI_API_KEY is set"
    why = why if base or key else "neither OPENAI_API_KEY nor TUTORLIB_JUDGE_BASE_URL is set"
    if verbose:
        print(f"Grading with {judge.label} because {why}.")
    return judge


def grade_many(
    judge: LLMJudge | OfflineJudge,
    rubric: Rubric | str,
    items: Iterable[Mapping[str, Any]],
    workers: int = 4,
) -> pd.DataFrame:
    """Grade items (dicts: id, dialogue, summary, references), `workers` at a time, into one row
    each: id, the criteria, total (missing when failed), failed, reason, tokens, retries, cached,
    cost_usd, judge. A judge with a cache has it checked before the first request."""
    rubric, items = _rubric(rubric), list(items)
    for i, item in enumerate(items):
        texts = isinstance(item, Mapping) and all(
            isinstance(item.get(k), str) for k in ("dialogue", "summary")
        )
        if not texts:
            raise ValueError(
                f"item {i} needs string 'dialogue' and 'summary' (and 'id', 'references')"
            )
    if isinstance(cache := getattr(judge, "cache", None), JudgmentCache):
        cache.check()
    lowest = {c.name: c.scale[0] for c in rubric.criteria}

    def one(item: Mapping[str, Any]) -> dict[str, Any]:
        if not item["summary"].strip():  # meets no criterion: scored, without a request
            return {**lowest, "failed": False, "reason": "empty summary"}
        return judge.grade(rubric, item["dialogue"], item["summary"], item.get("references"))

    with ThreadPoolExecutor(workers) as pool:
        graded = pool.map(one, items)
        results = list(tqdm(graded, total=len(items), desc=f"grading with {judge.label}"))
    names = [c.name for c in rubric.criteria]
    rows = [{"id": item.get("id", i), **_COUNTS, **results[i]} for i, item in enumerate(items)]
    columns = ["id", *names, "total", "failed", "reason", *_COUNTS, "cost_usd"]
    df = pd.DataFrame(rows).reindex(columns=columns)
    df = df.astype({**dict.fromkeys(names, "Int64"), "failed": bool, "cached": bool})
    df["total"] = df[names].sum(axis=1).where(~df["failed"])
    price = judge.price or (float("nan"),) * 2  # unknown, not free
    df["cost_usd"] = (df["input_tokens"] * price[0] + df["output_tokens"] * price[1]) / 1e6
    df["judge"] = judge.label
    df.attrs["price_note"] = judge.price_note
    return df


def summarize_grades(df: pd.DataFrame, rubric: Rubric | str) -> dict[str, Any]:
    """Totals of a grade_many table; failed items are counted but left out of scores and maxima."""
    rubric = _rubric(rubric)
    names = [c.name for c in rubric.criteria]
    if missing := sorted({*names, "failed", *_COUNTS, "cost_usd", "judge"} - set(df.columns)):
        raise ValueError(
            f"not a grade_many table for rubric {rubric.name!r}: missing columns {missing}"
        )
    graded = df[~df["failed"]]
    criteria = {name: int(graded[name].sum()) for name in names}
    n = len(graded)
    maxima = {c.name: c.scale[1] * n for c in rubric.criteria}
    totals = {"judge": ", ".join(sorted(set(df["judge"]))), "graded": n, "failed": len(df) - n}
    totals |= {"total": sum(criteria.values()), "criteria": criteria, "criteria_max": maxima}
    totals |= {"max_total": sum(maxima.values()), **{k: int(df[k].sum()) for k in _COUNTS}}
    cost = None if df["cost_usd"].isna().all() else float(df["cost_usd"].sum())
    return totals | {"cost_usd": cost, "price_note": df.attrs.get("price_note", "")}


def report(totals: Mapping[str, Any]) -> str:
    """One line on the grading: judge, graded/failed, tokens, retries, cache hits, cost."""
    cost = "cost unknown" if totals["cost_usd"] is None else f"cost ~${totals['cost_usd']:.4f}"
    return (
        f"judge {totals['judge']}: graded {totals['graded']}, failed {totals['failed']} "
        f"(failures are not scored); tokens {totals['input_tokens']:,} in / "
        f"{totals['output_tokens']:,} out, {totals['retries']} retries, "
        f"{totals['cached']} from cache, {cost} ({totals['price_note']})"
    )
