"""Fine-tuning through the OpenAI API: the chat JSONL checked line by line, its token count and cost
before anything is paid, and a job that a rerun picks up instead of uploading or paying twice."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tutorlib import paths

MIN_EXAMPLES = 10  # OpenAI refuses fewer; it reports clear gains from 50-100 well-made examples
# Per base model: USD per 1M training tokens, and the most tokens one example may hold (longer
# ones are cut); dated in prices.toml (PRICES_AS_OF), since prices change.
_PRICES = tomllib.loads(resources.files("tutorlib").joinpath("prices.toml").read_text("utf-8"))
TRAINING = {model: (usd, int(most)) for model, (usd, most) in _PRICES["fine_tuning"].items()}
PRICES_AS_OF = _PRICES["as_of"]
_ROLES = ("system", "user", "assistant")


def _encoder(model: str) -> Any:
    """tiktoken's encoding for `model`; None without tiktoken or its encoding file (a download)."""
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base" if model.startswith("gpt-3.5") else "o200k_base")
    except Exception:  # noqa: BLE001 - not installed, or offline on first use: count approximately
        return None


def default_epochs(examples: int) -> int:
    """The epochs OpenAI chooses when left out, per its cookbook (as of writing): 3, raised so that
    about 100 examples are seen in all, or lowered to about 25,000; between 1 and 25."""
    if examples * 3 < 100:
        return min(25, math.ceil(100 / examples))
    return max(1, 25_000 // examples) if examples * 3 > 25_000 else 3


@dataclass
class Report:
    """What `check` found in one training file; every problem names its line (0: the whole file)."""

    path: Path
    model: str
    tokens: list[int] = field(default_factory=list)  # per valid example, as OpenAI would bill it
    problems: list[tuple[int, str]] = field(default_factory=list)
    approximate: bool = False  # no tiktoken encoding here: 4 characters counted as a token

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def examples(self) -> int:
        return len(self.tokens)

    def cost(self, epochs: int | None = None) -> tuple[int, float]:
        """(tokens billed, USD) for `epochs` (default: OpenAI's choice) at the TRAINING price."""
        billed = sum(self.tokens) * (epochs or default_epochs(max(self.examples, 1)))
        return billed, billed * TRAINING[self.model][0] / 1e6

    def __str__(self) -> str:
        how = "approximately: 4 characters a token" if self.approximate else "counted with tiktoken"
        lines = [f"{self.path.name}: {self.examples} examples, {sum(self.tokens):,} tokens ({how})"]
        if self.tokens:
            median, longest = statistics.median_high(self.tokens), max(self.tokens)
            lines.append(f"tokens per example: median {median:,}, longest {longest:,}")
        lines.append(f"{len(self.problems)} problem(s)" + (":" if self.problems else ""))
        lines += [f"  line {n}: {text}" if n else f"  {text}" for n, text in self.problems]
        return "\n".join(lines)


def check(path: str | Path, model: str = "gpt-4o-mini-2024-07-18") -> Report:
    """Check a chat fine-tuning JSONL file as OpenAI would before training, and count its tokens."""
    if model not in TRAINING:
        raise ValueError(f"unknown base model {model!r}; expected one of: {', '.join(TRAINING)}")
    encoder, limit = _encoder(model), TRAINING[model][1]
    report = Report(Path(path), model, approximate=encoder is None)
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:  # OpenAI reads UTF-8 only: name the line and the byte
            where = f"byte {err.start + 1} of the line ({err.reason})"
            report.problems.append((number, f"not UTF-8 at {where}; save the file as UTF-8"))
            continue
        problem, tokens = _problem(line, encoder)
        if problem is None and tokens > limit:
            problem = f"{tokens:,} tokens, more than {model}'s {limit:,}: the end would be cut off"
        if problem:
            report.problems.append((number, problem))
        elif line.strip():
            report.tokens.append(tokens)
    if report.examples < MIN_EXAMPLES:
        report.problems.append(
            (0, f"{report.examples} valid examples; OpenAI needs at least {MIN_EXAMPLES}")
        )
    return report


def _problem(line: str, encoder: Any) -> tuple[str | None, int]:
    """What is wrong with one line (None if nothing), and its tokens:
    3 a message + content, 3 for the reply."""
    if not line.strip():
        return None, 0
    try:
        example = json.loads(line)
    except json.JSONDecodeError as err:
        return f"not JSON ({err.msg}; column {err.colno})", 0
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or not messages:
        return "expected an object with a non-empty 'messages' list", 0
    tokens = 3
    for k, message in enumerate(messages, start=1):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            return f"message {k}: role {role!r}; expected one of {', '.join(_ROLES)}", 0
        text, problem = _text(message.get("content"))
        if problem:
            return f"message {k} ({role}): {problem}", 0
        tokens += 3 + (len(encoder.encode(text)) if encoder else math.ceil(len(text) / 4))
    if messages[-1]["role"] != "assistant":
        last = messages[-1]["role"]
        return f"the last message is the {last}'s; expected the assistant's answer", 0
    return None, tokens


def _text(content: Any) -> tuple[str, str | None]:
    """A message's text, from a string or from a list of text parts ({"type": "text", "text":
    ...}, as the chat format allows), and what is wrong with it (None: nothing)."""
    if isinstance(content, list):
        kinds = {part.get("type") if isinstance(part, dict) else None for part in content}
        if kinds - {"text"}:
            unsupported = sorted(str(k) for k in kinds - {"text"})
            return "", f"content parts of type {unsupported}; this check counts text parts only"
        content = "".join(str(part.get("text") or "") for part in content)
    if not isinstance(content, str) or not content.strip():
        return "", "empty or missing 'content'; expected text or a list of text parts"
    return content, None


def _state(path: Path) -> dict[str, Any]:
    """The saved ids of an earlier submission ({} for none); a damaged file stops everything, so
    that nothing is uploaded or paid for twice."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        saved = json.loads(text)
    except json.JSONDecodeError:
        saved = None
    if not isinstance(saved, dict):
        raise ValueError(
            f"the job state file {path} is damaged (it holds {text[:80]!r}). It records the ids of "
            "an upload and a job that may already exist: find them on the OpenAI dashboard "
            "(Storage > Files, Fine-tuning) and write them back as "
            '{"sha256": ..., "model": ..., "file_id": ..., "job_id": ...}, or delete the file to '
            "upload and start a new job"
        )
    return saved


def submit(client: Any, path: str | Path, model: str, state: str | Path, **job: Any) -> str:
    """Upload `path` and create one fine-tuning job on it; returns the job id. Each id is saved to
    the JSON file `state` as soon as the API returns it, and the job is tagged with the file's hash:
    a rerun reuses the upload and finds the job (even one whose reply was lost) instead of paying
    again. A changed file or base model starts afresh; the earlier ids are kept under "earlier"."""
    data, state = Path(path).read_bytes(), Path(state)
    key = {"sha256": hashlib.sha256(data).hexdigest(), "model": model}
    saved = _state(state)
    if {k: saved.get(k) for k in key} != key:
        earlier = saved.pop("earlier", []) + ([saved] if saved else [])
        saved = {**key, "earlier": earlier}

    def keep(**ids: str) -> None:  # written whole: an interruption leaves the earlier state
        saved.update(ids)
        paths.write_atomic(state, json.dumps(saved, indent=1))

    if "file_id" not in saved:
        keep(file_id=client.files.create(file=(Path(path).name, data), purpose="fine-tune").id)
    if "job_id" not in saved:
        tag = {"tutorlib_sha256": key["sha256"][:32]}  # metadata values are short strings
        # A job whose reply was lost still exists: find it by its tag (a failed or cancelled one
        # is redone).
        for made in client.fine_tuning.jobs.list(metadata=tag, limit=10):
            if made.model.startswith(model) and made.status not in ("failed", "cancelled"):
                break
        else:
            made = client.fine_tuning.jobs.create(
                training_file=saved["file_id"], model=model, metadata=tag, **job
            )
        keep(job_id=made.id)
    return saved["job_id"]
