"""One JSON record per experiment, the documents' published numbers (reference.csv), side by side."""

import functools
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from tutorlib import paths

_MEMORY_KINDS = ("cuda", "cpu_rss")
_SECRET_ENV_VARS = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_REQUIRED = ("experiment", "notebook", "profile", "model", "method", "scores", "created_at")
_NUMBER, _TEXT = (int, float, type(None)), (str, type(None))
# The types the tables and figures compute with; `record` writes them, `_read` skips a file without them.
_TYPES = dict.fromkeys(_REQUIRED, str) | {"scores": dict, "extra": dict, "train_seconds": _NUMBER}
_TYPES |= {"peak_memory_mb": _NUMBER}
_KINDS = {str: "text", dict: "an object", _NUMBER: "a number or null", _TEXT: "text or null"}
_MAIN_SCORES = ("total", "rougeLsum", "rougeL", "rouge1")  # the judge's total first, else ROUGE
_EXPERIMENT_NAME = re.compile(r"[a-z0-9_-]+")


def _refuse_secrets(text: str, secrets: Sequence[str | None]) -> None:
    """Raise naming the variable or argument whose value is in `text`; the value itself is never shown."""
    named = [(f"${var}", os.environ.get(var)) for var in _SECRET_ENV_VARS]
    named += [(f"secrets[{i}]", secret) for i, secret in enumerate(secrets)]
    for name, secret in named:
        # Under 8 characters it is a placeholder such as "EMPTY", and would match ordinary text.
        if secret and len(secret) >= 8 and (secret in text or json.dumps(secret)[1:-1] in text):
            raise ValueError(f"refusing to write a results record that contains the value of {name}")


def record(experiment: str, *, notebook: str, profile: Any, model: str, method: str, scores: Mapping[str, Any],
           train_seconds: float | None = None, peak_memory_mb: float | None = None, memory_kind: str | None = None,
           judge: str | None = None, dtype: str | None = None, extra: Mapping[str, Any] | None = None,
           secrets: Sequence[str | None] = ()) -> Path:
    """Write `results/<profile>/<experiment>.json`; refuse it if it holds a token or a value of `secrets`."""
    if not isinstance(experiment, str) or not _EXPERIMENT_NAME.fullmatch(experiment):
        raise ValueError(f"experiment name {experiment!r} is not valid; expected a-z, 0-9, '_' or '-'")
    if memory_kind not in (*_MEMORY_KINDS, None) or (peak_memory_mb is not None and memory_kind is None):
        raise ValueError(f"memory_kind must be one of {_MEMORY_KINDS} for a peak memory; got {memory_kind!r}")
    if not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a dict of score name -> value; got {type(scores).__name__}")
    from tutorlib.profile import library_versions  # deferred: tutorlib.profile imports torch

    gpu = getattr(profile, "gpu_name", None)
    device = f"{profile.device} ({gpu})" if gpu else str(profile.device)
    data = dict(experiment=experiment, notebook=notebook, profile=profile.name, model=model, method=method)
    data |= dict(device=device, dtype=dtype or str(profile.dtype).removeprefix("torch."))
    data |= dict(train_seconds=train_seconds, peak_memory_mb=peak_memory_mb, memory_kind=memory_kind)
    data |= dict(judge=judge, scores=dict(scores), extra=dict(extra or {}), library_versions=library_versions())
    data["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    # NumPy and torch scalars by `.item()`; anything else JSON lacks (paths, dtypes) as text.
    text = json.dumps(data, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n"
    _refuse_secrets(text, secrets)
    if problem := _problem(json.loads(text)):  # the tables would skip it
        raise ValueError(f"refusing to write results record {experiment!r}: it {problem}")
    path = paths.results_dir(profile.name) / f"{experiment}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")  # renamed: a reader never sees half a record
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # still there only when the write failed
    return path


def _problem(data: Any) -> str | None:
    """What keeps `data` from being a usable record, or None: missing keys, or values of the wrong type."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if missing := [k for k in _REQUIRED if k not in data]:
        return f"lacks the required keys {missing}"
    got = [(k, data[k], kind) for k, kind in _TYPES.items() if k in data]
    if isinstance(data["scores"], dict) and isinstance(extra := data.get("extra", {}), dict):
        got += [(f"scores.{k}", v, _NUMBER) for k, v in data["scores"].items()]
        got.append(("extra.configuration", extra.get("configuration"), _TEXT))
    wrong = [f"{k} is {type(v).__name__}, expected {_KINDS[t]}" for k, v, t in got if not isinstance(v, t)]
    return f"has values of the wrong type: {'; '.join(wrong)}" if wrong else None


def _read(path: Path) -> dict[str, Any] | None:
    """One record, or None after a warning that names the file and what is wrong with it."""
    try:
        problem = _problem(data := json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = f"cannot be read as JSON ({err})"
    if problem:
        warnings.warn(f"skipping results record {path}: it {problem}", stacklevel=3)
    return None if problem else data


def load_records(profile_name: str | None = None, notebook: str | None = None) -> list[dict[str, Any]]:
    """The readable records (of one profile and notebook when given), oldest first; bad files are skipped."""
    parent = paths.results_dir("any").parent  # results_dir(p) is <results root>/<p>
    found = []
    for path in sorted(parent.glob(f"{profile_name}/*.json" if profile_name else "*/*.json")):
        data = _read(path)
        if data and (notebook is None or Path(str(data["notebook"])).stem == Path(notebook).stem):
            # created_at has whole seconds; the file's time orders two records written in the same one.
            found.append((str(data["profile"]), str(data["created_at"]), path.stat().st_mtime_ns, data))
    return [data for *_, data in sorted(found, key=lambda item: item[:3])]


def latest(profile_name: str, configurations: Sequence[str], producers: Mapping | None = None) -> list[dict]:
    """The newest record per `extra.configuration`, in the order given; the missing ones are named. With
    `producers` (configuration -> notebook number), only that notebook's records count for it, since
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


def _failure(rec: Mapping[str, Any]) -> str | None:
    reason = rec.get("extra", {}).get("failed")
    return None if not reason else "failed" if reason is True else f"failed ({reason})"


def _main_score(rec: Mapping[str, Any]) -> str:
    scores = rec["scores"]
    name = next((k for k in (*_MAIN_SCORES, *scores) if k in scores), None)
    value = f"{scores[name]:.4g}" if isinstance(scores.get(name), int | float) else scores.get(name)
    if scores.get("graded") == 0 and scores.get("failed"):  # nothing was judged: never show it as 0
        return f"all {scores['failed']} judgments failed"
    return _failure(rec) or ("—" if name is None else f"{name} {value}")


def summary_table(profile_name: str | None = None) -> pd.DataFrame:
    """One line per record: experiment, model, method, main score, minutes, peak memory and its kind."""
    columns = ["experiment", "profile", "model", "method", "main score", "train min", "peak memory", "judge"]
    rows = []
    for rec in load_records(profile_name):
        seconds, mb = rec.get("train_seconds"), rec.get("peak_memory_mb")
        minutes = None if seconds is None else round(seconds / 60, 2)
        memory = "—" if mb is None else f"{mb:.0f} MB ({rec.get('memory_kind')})"
        names = [rec[k] for k in ("experiment", "profile", "model", "method")]
        rows.append([*names, _main_score(rec), minutes, memory, rec.get("judge") or "—"])
    return pd.DataFrame(rows, columns=columns)


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
                raise ValueError(f"no {column} {wanted!r} in the reference data; expected one of {known}")
            df = df[df[column] == wanted]
    return df.reset_index(drop=True)


def _measured(rec: Mapping[str, Any], metric: str) -> Any:
    """A record's number for `metric` (a score, `extra`, the top level; minutes from seconds); points
    are shown out of this run's own maximum, which under `smoke` is far below the document's 150."""
    scores = rec["scores"]
    for source in (scores, rec.get("extra", {}), rec):
        if source.get(metric) is not None:
            value = source[metric]
            value = float(f"{value:.4g}") if isinstance(value, float) else value  # as the documents print
            out_of = scores.get("max_total") if metric == "total" else scores.get("graded")
            return f"{value:g} of {out_of}" if metric in scores and out_of and metric != "graded" else value
    seconds = rec.get("train_seconds")
    if metric == "train_minutes":
        untrained, known = rec.get("method") in ("base", "reference"), seconds is not None
        return "not trained" if untrained else round(seconds / 60, 2) if known else "not measured"
    return "not measured"


def _run_label(records: Sequence[Mapping[str, Any]]) -> str:
    """`this run (<profile>, <device>, judge: <judge>)` from the values the records hold."""
    parts = []
    for key, prefix in (("profile", ""), ("device", ""), ("judge", "judge: ")):
        if values := list(dict.fromkeys(str(r[key]) for r in records if r.get(key))):
            parts.append(prefix + " / ".join(values))
    return f"this run ({', '.join(parts)})" if parts else "this run"


def side_by_side(document: str, table: str, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Each number of the document's table beside this run's (by `extra.configuration`); no record: empty."""
    by_configuration = {rec.get("extra", {}).get("configuration"): rec for rec in records}
    rows = []
    for ref in reference(document, table).itertuples():
        rec = by_configuration.get(ref.configuration)
        ours = "" if rec is None else _failure(rec) or _measured(rec, ref.metric)
        published = (ref.note or "not published") if pd.isna(ref.value) else ref.value
        rows.append([ref.configuration, ref.metric, ref.unit, published, ours])
    return pd.DataFrame(rows, columns=["configuration", "metric", "unit", "document", _run_label(records)])
