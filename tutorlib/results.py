"""One JSON record per experiment, the documents' published numbers (reference.csv), side by side.
Torch-free (ARCHITECTURE.md, "The layers")."""

import functools
import json
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pydantic

from tutorlib import env, paths

_SECRET_ENV_VARS = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_MAIN_SCORES = ("total", "rougeLsum", "rougeL", "rouge1")  # the judge's total first, else ROUGE
_UNION_MEMBERS = ("int", "float", "str", "none")  # pydantic's names for a union's members


class Record(pydantic.BaseModel):
    """One experiment (ARCHITECTURE.md, "Results records"). Strict: the tables compute with these
    values, so a record with a score of the wrong type is never written, and skipped when read."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid")

    experiment: str = pydantic.Field(pattern=r"^[a-z0-9_-]+$")
    notebook: str
    profile: str
    model: str
    stand_in: str | None = None  # what ran in the model's place (`cpu`, `smoke`); None: itself
    method: str
    device: str
    dtype: str
    train_seconds: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: Literal["cuda", "cpu_rss"] | None = None
    judge: str | None = None
    scores: dict[str, int | float | None]
    extra: dict[str, Any] = {}
    library_versions: dict[str, str] = pydantic.Field(default_factory=env.library_versions)
    created_at: str = pydantic.Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @pydantic.field_validator("scores", "extra", mode="before")
    @classmethod
    def _plain_json(cls, value: Any) -> Any:
        """NumPy/torch scalars by `.item()`; anything else JSON lacks (paths, dtypes) as text."""
        as_json = json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
        return json.loads(as_json)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "Record":
        if self.peak_memory_mb is not None and self.memory_kind is None:
            raise ValueError("a peak_memory_mb needs its memory_kind ('cuda' or 'cpu_rss')")
        if not isinstance(self.extra.get("configuration", ""), str):
            raise ValueError("extra.configuration must be text")
        return self

    @property
    def path(self) -> Path:
        return paths.results_dir(self.profile) / f"{self.experiment}.json"

    def save(self, secrets: Sequence[str | None] = ()) -> Path:
        """Write the record whole (a reader never sees half of one); refuse it if it holds a token
        or a value of `secrets`, or if its file belongs to another configuration."""
        text = self.model_dump_json(indent=2) + "\n"
        _refuse_secrets(text, secrets)
        mine = self.extra.get("configuration")
        if self.path.exists() and (other := configuration_in(self.path)) not in (None, mine):
            raise ValueError(
                f"{self.path} holds the record of configuration {other!r}; refusing to overwrite "
                f"it with {mine!r}: give the two configurations names that differ in letters or "
                "digits, or another experiment name"
            )
        paths.write_atomic(self.path, text)
        return self.path


def _refuse_secrets(text: str, secrets: Sequence[str | None]) -> None:
    """Raise naming the variable or argument whose value is in `text`, never the value itself."""
    named = [(f"${var}", env.secret(var)) for var in _SECRET_ENV_VARS]
    named += [(f"secrets[{i}]", secret) for i, secret in enumerate(secrets)]
    for name, secret in named:
        # Under 8 characters it is a placeholder such as "EMPTY", and would match ordinary text.
        if secret and len(secret) >= 8 and (secret in text or json.dumps(secret)[1:-1] in text):
            raise ValueError(
                f"refusing to write a results record that contains the value of {name}"
            )


def record(
    experiment: str, *, profile: Any, secrets: Sequence[str | None] = (), **fields: Any
) -> Path:
    """Write `results/<profile>/<experiment>.json`: `fields` are `Record`'s (notebook, model,
    method, scores, ...); device and dtype come from `profile` unless given."""
    gpu = getattr(profile, "gpu_name", None)
    fields.setdefault("device", f"{profile.device} ({gpu})" if gpu else str(profile.device))
    fields["dtype"] = fields.get("dtype") or str(profile.dtype).removeprefix("torch.")
    try:
        entry = Record(experiment=experiment, profile=profile.name, **fields)
    except pydantic.ValidationError as err:
        raise ValueError(f"refusing to write results record {experiment!r}: {_why(err)}") from None
    return entry.save(secrets)


def _why(err: pydantic.ValidationError) -> str:
    """pydantic's errors as one line, one per field: 'scores.total: Input should be a valid
    number; ...' (a union's members, int or float, are not repeated as fields of their own)."""
    found: dict[str, str] = {}
    for e in err.errors():
        where = [str(part) for part in e["loc"] if part not in _UNION_MEMBERS]
        found[".".join(where) or "record"] = e["msg"].removeprefix("Value error, ")
    return "; ".join(f"{where}: {msg}" for where, msg in found.items())


def configuration_in(path: Path) -> str | None:
    """The configuration a record file holds (None: unreadable or none named)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("extra", {}).get("configuration")
    except (OSError, ValueError, AttributeError):
        return None


def _read(path: Path) -> dict[str, Any] | None:
    """One record, or None after a warning that names the file and what is wrong with it."""
    try:
        return Record.model_validate_json(path.read_bytes()).model_dump()
    except OSError as err:
        problem = f"cannot be read ({err})"
    except pydantic.ValidationError as err:
        problem = f"is not a results record ({_why(err)})"
    warnings.warn(f"skipping results record {path}: it {problem}", stacklevel=3)
    return None


def failure(rec: Mapping[str, Any]) -> str | None:
    """'failed' or 'failed (OOM)' for a run recorded as failed; None for a finished one."""
    reason = (rec.get("extra") or {}).get("failed")
    return None if not reason else "failed" if reason is True else f"failed ({reason})"


def load_records(
    profile_name: str | None = None, notebook: str | None = None
) -> list[dict[str, Any]]:
    """The readable records (of one profile and notebook when given), oldest first; bad files
    are skipped."""
    parent = paths.results_dir("any").parent  # results_dir(p) is <results root>/<p>
    found = []
    for path in sorted(parent.glob(f"{profile_name or '*'}/*.json")):
        data = _read(path)
        if data and (notebook is None or Path(str(data["notebook"])).stem == Path(notebook).stem):
            # created_at has whole seconds; file times order two records written in the same second.
            found.append((data["profile"], data["created_at"], path.stat().st_mtime_ns, data))
    return [data for *_, data in sorted(found, key=lambda item: item[:3])]


def latest(
    profile_name: str, configurations: Sequence[str], producers: Mapping | None = None
) -> list[dict]:
    """The newest record per `extra.configuration`, in the order given; the missing ones are named.
    With `producers` (configuration -> notebook number), only that notebook's records count, since
    another lesson may reuse the name (08's "DistilGPT2 base" is a DialogSum run, not 01's)."""
    newest, producers = {}, producers or {}
    for rec in load_records(profile_name):  # oldest first, so later ones win
        name = rec.get("extra", {}).get("configuration")
        if str(rec.get("notebook", "")).startswith(producers.get(name, "")):
            newest[name] = rec
    if missing := [c for c in configurations if c not in newest]:
        named = [f"{c} (made by {producers[c]})" if c in producers else c for c in missing]
        print(f"no {profile_name} record yet for: {'; '.join(named)}")
    return [newest[c] for c in configurations if c in newest]


def _main_score(rec: Mapping[str, Any]) -> str:
    scores = rec["scores"]
    name = next((k for k in (*_MAIN_SCORES, *scores) if k in scores), None)
    value = f"{scores[name]:.4g}" if isinstance(scores.get(name), int | float) else scores.get(name)
    if scores.get("graded") == 0 and scores.get("failed"):  # nothing was judged: never show it as 0
        return f"all {scores['failed']} judgments failed"
    return failure(rec) or ("—" if name is None else f"{name} {value}")


def summary_table(profile_name: str | None = None) -> pd.DataFrame:
    """One line per record: experiment, model, method, main score, minutes, peak memory and kind."""
    named = ["experiment", "profile", "model", "method"]
    rows = []
    for rec in load_records(profile_name):
        seconds, mb = rec.get("train_seconds"), rec.get("peak_memory_mb")
        minutes = None if seconds is None else round(seconds / 60, 2)
        memory = "—" if mb is None else f"{mb:.0f} MB ({rec.get('memory_kind')})"
        names = [rec[k] for k in named]
        rows.append([*names, _main_score(rec), minutes, memory, rec.get("judge") or "—"])
    return pd.DataFrame(rows, columns=[*named, "main score", "train min", "peak memory", "judge"])


@functools.cache
def _reference_table() -> pd.DataFrame:
    with resources.files("tutorlib").joinpath("reference.csv").open(encoding="utf-8") as handle:
        # Text stays text ("000", empty notes); only an empty value is missing: "not published".
        df = pd.read_csv(handle, dtype=str, keep_default_na=False, na_values={"value": [""]})
    return df.astype({"value": float})


def reference(document: str | None = None, table: str | None = None) -> pd.DataFrame:
    """The documents' published numbers, optionally of one document and one table (or section)."""
    df = _reference_table()
    for column, wanted in (("document", document), ("table", table)):
        if wanted is not None:
            known = list(dict.fromkeys(df[column]))
            if wanted not in known:
                raise ValueError(
                    f"no {column} {wanted!r} in the reference data; expected one of {known}"
                )
            df = df[df[column] == wanted]
    return df.reset_index(drop=True)


def _measured(rec: Mapping[str, Any], metric: str) -> Any:
    """A record's number for `metric` (a score, `extra`, the top level; minutes from seconds), a
    float to 4 digits as the documents print it; points are out of this run's own maximum, under
    `smoke` far below the document's 150."""
    scores = rec["scores"]
    for source in (scores, rec.get("extra", {}), rec):
        if source.get(metric) is not None:
            value = source[metric]
            value = float(f"{value:.4g}") if isinstance(value, float) else value
            out_of = scores.get("max_total") if metric == "total" else scores.get("graded")
            if metric in scores and out_of and metric != "graded":
                return f"{value:g} of {out_of}"
            return value
    if metric == "train_minutes" and rec.get("method") in ("base", "reference"):
        return "not trained"
    if metric == "train_minutes" and rec.get("train_seconds") is not None:
        return round(rec["train_seconds"] / 60, 2)
    return "not measured"


def _run_label(records: Sequence[Mapping[str, Any]]) -> str:
    """`this run (<profile>, <device>, judge: <judge>)` from the values the records hold."""
    parts = []
    for key, prefix in (("profile", ""), ("device", ""), ("judge", "judge: ")):
        if values := list(dict.fromkeys(str(r[key]) for r in records if r.get(key))):
            parts.append(prefix + " / ".join(values))
    return f"this run ({', '.join(parts)})" if parts else "this run"


def side_by_side(document: str, table: str, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Each number of the document's table beside this run's (by `extra.configuration`);
    no record: empty."""
    by_configuration = {rec.get("extra", {}).get("configuration"): rec for rec in records}
    rows = []
    for ref in reference(document, table).itertuples():
        rec = by_configuration.get(ref.configuration)
        ours = "" if rec is None else failure(rec) or _measured(rec, ref.metric)
        # 2e-4 beside 85,000,000: written out, so that pandas does not print them as 2e+00
        published = (ref.note or "not published") if pd.isna(ref.value) else f"{ref.value:,.10g}"
        rows.append([ref.configuration, ref.metric, ref.unit, published, ours])
    return pd.DataFrame(
        rows, columns=["configuration", "metric", "unit", "document", _run_label(records)]
    )
