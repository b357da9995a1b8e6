"""Results records, the source documents' published numbers, and tables that put the two side by side.

Every experiment a notebook runs writes one JSON record to `results/<profile>/<experiment>.json`
(`record`, `record_run`); the notebooks' and README's tables and figures are built from these files
only (`load`, `load_records`, `summary_table`). `REFERENCE` holds the numbers the five source
documents publish, each tagged with the seed it comes from and the table or section that states it,
so a notebook can show "the document measured X, this run measured Y" (`reference`, `side_by_side`)
without anyone retyping a number from the text.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tutorlib import paths

MEMORY_KINDS = ("cuda", "cpu_rss")

# Columns of `load()` before the flattened `score.<name>` and `extra.<name>` columns.
COLUMNS = (
    "experiment",
    "notebook",
    "profile",
    "model",
    "method",
    "device",
    "dtype",
    "train_seconds",
    "peak_memory_mb",
    "memory_kind",
    "judge",
    "library_versions",
    "created_at",
)

# Environment variables whose values must never end up in a file under results/ (which is committed).
SECRET_ENV_VARS = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

# The score `summary_table` shows when a record has several: the judge's total, else ROUGE.
MAIN_SCORES = ("total", "rougeLsum", "rougeL", "rouge1")

_EXPERIMENT_NAME = re.compile(r"[a-z0-9_-]+")


# --------------------------------------------------------------------------------------------------
# Writing and reading records


def _device_label(profile: Any) -> str:
    gpu = getattr(profile, "gpu_name", None)
    return f"{profile.device} ({gpu})" if gpu else str(profile.device)


def _jsonable(value: Any) -> Any:
    """`json.dumps` fallback: NumPy/torch scalars via `.item()`, paths and dtypes as text."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"cannot store a {type(value).__name__} in a results record; use numbers, text, lists, dicts"
    )


def _refuse_secrets(text: str) -> None:
    for var in SECRET_ENV_VARS:
        secret = os.environ.get(var, "")
        # Very short values cannot be real keys and would match ordinary text by accident.
        if len(secret) >= 8 and (secret in text or json.dumps(secret)[1:-1] in text):
            raise ValueError(f"refusing to write a results record that contains the value of ${var}")


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder so a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(
    experiment: str,
    *,
    notebook: str,
    profile: Any,
    model: str,
    method: str,
    scores: Mapping[str, Any],
    train_seconds: float | None = None,
    peak_memory_mb: float | None = None,
    memory_kind: str | None = None,
    judge: str | None = None,
    dtype: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the results record of one experiment to `results/<profile>/<experiment>.json` and return its path.

    `profile` is a `tutorlib.profile.Profile` (or anything with `name`, `device`, `dtype`, `gpu_name`).
    A memory number must say what it measured (`memory_kind` "cuda" or "cpu_rss"). `extra` carries
    anything else worth keeping, by convention `configuration` (the document's row this run
    reproduces, e.g. "DistilGPT2 LoRA") and `failed` (e.g. "OOM") for a run that did not finish.
    A record that would contain the OpenAI key or a Hugging Face token is refused.
    """
    if not isinstance(experiment, str) or not _EXPERIMENT_NAME.fullmatch(experiment):
        raise ValueError(
            f"experiment name {experiment!r} is not valid; expected lower-case letters, digits, '_' or '-'"
        )
    if memory_kind not in (*MEMORY_KINDS, None):
        raise ValueError(f"memory_kind {memory_kind!r} is not valid; expected one of {MEMORY_KINDS} or None")
    if peak_memory_mb is not None and memory_kind is None:
        raise ValueError(
            "peak_memory_mb was given without memory_kind; say whether it is 'cuda' or 'cpu_rss'"
        )
    if not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a dict of score name -> value; got {type(scores).__name__}")
    from tutorlib.profile import library_versions  # deferred: tutorlib.profile imports torch

    data = {
        "experiment": experiment,
        "notebook": notebook,
        "profile": profile.name,
        "model": model,
        "method": method,
        "device": _device_label(profile),
        "dtype": dtype or str(profile.dtype).removeprefix("torch."),
        "train_seconds": train_seconds,
        "peak_memory_mb": peak_memory_mb,
        "memory_kind": memory_kind,
        "judge": judge,
        "scores": dict(scores),
        "extra": dict(extra or {}),
        "library_versions": library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(data, indent=2, default=_jsonable) + "\n"
    _refuse_secrets(text)
    path = paths.results_dir(profile.name) / f"{experiment}.json"
    _write_atomically(path, text)
    return path


def record_run(
    experiment: str,
    run: Any,
    *,
    notebook: str,
    profile: Any,
    scores: Mapping[str, Any],
    model: str | None = None,
    judge: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """`record` for a training result: time, peak memory, method, model and parameter counts come from `run`.

    `run` is what `tutorlib.train` returns (read by attribute, so any object with `seconds`,
    `peak_memory_mb`, `memory_kind`, `method` and optionally `model_name`, `trainable_params`,
    `total_params`, `dtype` will do). `model` overrides or supplies the model name.
    """
    model = model or getattr(run, "model_name", None)
    if not model:
        raise ValueError("the run has no model_name; pass model='...' to record_run")
    counts = {name: getattr(run, name, None) for name in ("trainable_params", "total_params")}
    counts = {name: value for name, value in counts.items() if value is not None}
    if counts.get("total_params"):
        counts["trainable_percent"] = 100 * counts.get("trainable_params", 0) / counts["total_params"]
    dtype = getattr(run, "dtype", None)
    return record(
        experiment,
        notebook=notebook,
        profile=profile,
        model=model,
        method=run.method,
        scores=scores,
        train_seconds=run.seconds,
        peak_memory_mb=run.peak_memory_mb,
        memory_kind=run.memory_kind,
        judge=judge,
        dtype=None if dtype is None else str(dtype).removeprefix("torch."),
        extra={**counts, **(extra or {})},
    )


def load_records(profile_name: str | None = None, *, notebook: str | None = None) -> list[dict[str, Any]]:
    """All records (of one profile, of one notebook when given), oldest first, as the dicts written to disk."""
    parent = paths.results_dir("any").parent  # results_dir(p) is <results root>/<p>
    pattern = f"{profile_name}/*.json" if profile_name else "*/*.json"
    records = []
    for path in sorted(parent.glob(pattern)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"results record {path} is not valid JSON: {err}") from err
        if notebook is None or Path(str(data.get("notebook"))).stem == Path(notebook).stem:
            records.append(data)
    return sorted(records, key=lambda r: (str(r.get("profile")), str(r.get("created_at"))))


def load(profile_name: str | None = None, *, notebook: str | None = None) -> pd.DataFrame:
    """The records as a table: one row each, scores flattened to `score.<name>` and extra to `extra.<name>`."""
    rows = []
    for data in load_records(profile_name, notebook=notebook):
        row = {column: data.get(column) for column in COLUMNS}
        row.update({f"score.{k}": v for k, v in (data.get("scores") or {}).items()})
        row.update({f"extra.{k}": v for k, v in (data.get("extra") or {}).items()})
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.DataFrame(rows)


def field(row: Mapping[str, Any], name: str) -> Any:
    """A value of a record or table row by name: top level, then `scores`, then `extra`; None when absent.

    Works on the dicts of `load_records`, the rows of `load()` (`score.<name>` columns) and plain
    dicts a notebook builds. `train_minutes` is derived from `train_seconds` when not given.
    """
    nested = [row.get("scores"), row.get("extra")]
    candidates = [row.get(name), *(d.get(name) for d in nested if isinstance(d, Mapping))]
    candidates += [row.get(f"score.{name}"), row.get(f"extra.{name}")]
    for value in candidates:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    if name == "train_minutes":
        seconds = field(row, "train_seconds")
        return None if seconds is None else seconds / 60
    return None


def failure(row: Mapping[str, Any]) -> str | None:
    """The label `failed (<reason>)` of a run marked failed (e.g. extra={"failed": "OOM"}), else None."""
    reason = field(row, "failed")
    if not reason:
        return None
    return "failed" if reason is True else f"failed ({reason})"


def _main_score(data: Mapping[str, Any]) -> str:
    failed = failure(data)
    if failed:
        return failed
    scores = data.get("scores") or {}
    name = next((k for k in MAIN_SCORES if k in scores), next(iter(scores), None))
    if name is None:
        return "—"
    value = scores[name]
    return f"{name} {value:.4g}" if isinstance(value, (int, float)) else f"{name} {value}"


def summary_table(profile_name: str | None = None) -> pd.DataFrame:
    """One line per record: experiment, model, method, main score, training minutes, peak memory, judge."""
    rows = []
    for data in load_records(profile_name):
        seconds, mb = data.get("train_seconds"), data.get("peak_memory_mb")
        rows.append(
            {
                "experiment": data.get("experiment"),
                "profile": data.get("profile"),
                "model": data.get("model"),
                "method": data.get("method"),
                "main score": _main_score(data),
                "train min": None if seconds is None else round(seconds / 60, 2),
                "peak memory": "—" if mb is None else f"{mb:.0f} MB ({data.get('memory_kind')})",
                "judge": data.get("judge") or "—",
            }
        )
    columns = ["experiment", "profile", "model", "method", "main score", "train min", "peak memory", "judge"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------
# The source documents' published numbers


@dataclass(frozen=True)
class Reference:
    """One number a source document publishes, with where it says so (`table`: a table or a section)."""

    document: str
    table: str
    configuration: str
    metric: str
    value: float | None
    unit: str
    note: str = ""


DOCUMENTS: Mapping[str, str] = {
    "000": "TWEETSUMM: DistilGPT2 and Llama-2-7B, full fine-tuning vs LoRA vs QLoRA, graded by GPT-4",
    "001": "DialogSum: FLAN-T5-base, full fine-tuning vs LoRA",
    "002": "SAMSum: Falcon-7B with QLoRA, graded by GPT-3.5-turbo",
    "003": "DialogSum: Phi-2 with QLoRA",
    "004": "Overview of fine-tuning, LoRA and QLoRA",
}


def _rows(document: str, table: str, *rows: tuple) -> list[Reference]:
    return [Reference(document, table, *row) for row in rows]


# Seed 000. Scores are GPT-4 rubric points on 50 test conversations: one point each for an accurate
# customer description, an accurate agent description and a two-sentence length (so /150 in total,
# /50 per criterion). Metric names match the keys the course's records use (scores["total"], ...).
_TWEETSUMM = [
    *_rows(
        "000",
        "Overview",
        ("setting", "gpu_memory", 16, "GB", "Google Colab session with a 16 GB V100 GPU"),
    ),
    *_rows(
        "000",
        "Tools and libraries",
        ("DistilGPT2", "parameters", 82e6, "parameters", "85M and ~84M in later sections"),
        ("Llama-2-7B", "parameters", 7e9, "parameters", ""),
    ),
    *_rows(
        "000",
        "The TWEETSUMM dataset",
        ("TWEETSUMM", "train_examples", 2629, "examples", "one row per (conversation, hand-written summary)"),
        ("TWEETSUMM", "validation_examples", 356, "examples", ""),
        ("TWEETSUMM", "test_examples", 110, "examples", ""),
        ("TWEETSUMM", "test_examples_graded", 50, "conversations", "test set cut to 50 for grading"),
        ("rubric", "max_total", 150, "points", "3 criteria x 50 summaries, one point per criterion"),
    ),
    *_rows(
        "000",
        "Fine-tuning DistilGPT-2",
        ("DistilGPT2", "parameters", 85e6, "parameters", "the tools list says 82 million"),
        ("DistilGPT2 full fine-tune", "learning_rate", 2e-4, "", ""),
        ("DistilGPT2 full fine-tune", "weight_decay", 0.01, "", ""),
        ("DistilGPT2 full fine-tune", "epochs", 5, "epochs", ""),
        ("DistilGPT2 full fine-tune", "train_minutes", 10, "min", "'about 10 minutes'; Table 1 says 9.7"),
        ("generation", "max_new_tokens", 100, "tokens", ""),
        ("DistilGPT2 base", "total", 2, "points /150", ""),
        ("DistilGPT2 full fine-tune", "total", 67, "points /150", ""),
        ("DistilGPT2 full fine-tune", "two_sentences", 43, "points /50", ""),
        ("DistilGPT2 full fine-tune", "customer", 11, "points /50", ""),
        ("DistilGPT2 full fine-tune", "agent", 13, "points /50", ""),
    ),
    *_rows(
        "000",
        "LLama-2-7B",
        ("Llama-2-7B base", "total", 25.5, "points /150", ""),
        ("Llama-2-7B base", "two_sentences", 4, "points /50", "only four summaries were two sentences"),
        ("Llama-2-7B base", "customer+agent", 21.5, "points /100", "accuracy points of the 25.5"),
        ("Llama-2-7B full fine-tune", "total", None, "points /150", "failed (OOM)"),
        ("Llama-2-7B", "weights_memory", 12, "GB", "'around 12GB' for the weights alone"),
        ("Llama-2-7B full fine-tune", "estimated_memory", 64, "GB", "weights + gradients + optimizer"),
        ("setting", "gpu_total_capacity", 15.77, "GiB", "from the CUDA out-of-memory message"),
        ("Llama-2-7B full fine-tune", "max_seq_length", 1024, "tokens", ""),
        ("DistilGPT2", "parameters", 84e6, "parameters", "'about 84 million', around 1% of Llama-2-7B"),
    ),
    *_rows(
        "000",
        "Parameter-efficient fine-tuning",
        ("LoRA", "r", 16, "", ""),
        ("LoRA", "lora_alpha", 32, "", ""),
        ("LoRA", "lora_dropout", 0.05, "", ""),
        ("DistilGPT2 LoRA", "two_sentences", 42, "points /50", ""),
        ("DistilGPT2 LoRA", "customer", 9, "points /50", ""),
        ("DistilGPT2 LoRA", "agent", 7, "points /50", ""),
        ("DistilGPT2 LoRA (20 epochs)", "total", 65, "points /150", "20 epochs instead of 5"),
        ("DistilGPT2 LoRA", "peak_memory_saving_mb", 228, "MB", "lower max GPU RAM than full fine-tuning"),
        ("DistilGPT2 QLoRA", "peak_memory_saving_mb", 336, "MB", "lower max GPU RAM than full fine-tuning"),
        ("DistilGPT2", "weights_memory", 356, "MB", "'roughly 356 MB'"),
        ("Llama-2-7B LoRA", "epochs", 1, "epochs", "base weights loaded in 8-bit"),
        ("Llama-2-7B QLoRA", "epochs", 1, "epochs", ""),
    ),
    *_rows(
        "000",
        "Table 1",
        ("DistilGPT2 base", "total", 2, "points /150", ""),
        ("DistilGPT2 base", "train_minutes", 0, "min", "not trained"),
        ("DistilGPT2 full fine-tune", "total", 67, "points /150", ""),
        ("DistilGPT2 full fine-tune", "train_minutes", 9.7, "min", ""),
        ("DistilGPT2 LoRA", "total", 58, "points /150", ""),
        ("DistilGPT2 LoRA", "train_minutes", 6.9, "min", ""),
        ("DistilGPT2 QLoRA", "total", 52, "points /150", ""),
        ("DistilGPT2 QLoRA", "train_minutes", 14.3, "min", ""),
    ),
    *_rows(
        "000",
        "Table 2",
        ("Llama-2-7B base", "total", 25.5, "points /150", ""),
        ("Llama-2-7B base", "train_minutes", 0, "min", "not trained"),
        ("Llama-2-7B full fine-tune", "total", None, "points /150", "failed (OOM)"),
        ("Llama-2-7B full fine-tune", "train_minutes", None, "min", "failed (OOM)"),
        ("Llama-2-7B LoRA", "total", 131, "points /150", "base weights loaded in 8-bit"),
        ("Llama-2-7B LoRA", "train_minutes", 75.1, "min", "the text rounds to 75 minutes"),
        ("Llama-2-7B QLoRA", "total", 125, "points /150", "the text misprints it as 125/131"),
        ("Llama-2-7B QLoRA", "train_minutes", 21.3, "min", "the text rounds to 21 minutes"),
    ),
]

# Seed 001 trains FLAN-T5-base for a single step as a demonstration and publishes no scores; the
# rows with value None say so, so a side-by-side table shows "not published" instead of a gap.
_FLAN_T5 = [
    *_rows(
        "001",
        "Dataset",
        ("DialogSum", "dialogues", 10_000, "dialogues", "'10,000+'"),
        ("DialogSum", "subsample_every", 100, "rows", "optional: keep rows whose index % 100 == 0"),
    ),
    *_rows(
        "001",
        "Full Fine-Tuning",
        ("FLAN-T5 full fine-tune", "learning_rate", 1e-5, "", ""),
        ("FLAN-T5 full fine-tune", "weight_decay", 0.01, "", ""),
        ("FLAN-T5 full fine-tune", "epochs", 1, "epochs", ""),
        ("FLAN-T5 full fine-tune", "max_steps", 1, "steps", "a one-step demonstration"),
    ),
    *_rows(
        "001",
        "Parameter Efficient Fine-Tuning (PEFT)",
        ("LoRA", "r", 32, "", "on the q and v projections"),
        ("LoRA", "lora_alpha", 32, "", ""),
        ("LoRA", "lora_dropout", 0.05, "", ""),
        ("FLAN-T5 LoRA", "learning_rate", 1e-3, "", "higher than for full fine-tuning"),
        ("FLAN-T5 LoRA", "max_steps", 1, "steps", "a one-step demonstration"),
        ("FLAN-T5 LoRA", "adapter_share", None, "% of the model", "'a single-digit %' of the LLM's size"),
    ),
    *_rows(
        "001",
        "Evaluation",
        *[
            (config, metric, None, "F 0-1", "not published")
            for config in ("FLAN-T5 base", "FLAN-T5 full fine-tune", "FLAN-T5 LoRA")
            for metric in ("rouge1", "rouge2", "rougeL", "rougeLsum")
        ],
    ),
]

_FALCON = [
    *_rows(
        "002",
        "Prepare the Dataset for Fine-Tuning",
        ("SAMSum", "train_examples", 14_732, "examples", ""),
        ("SAMSum", "validation_examples", 818, "examples", ""),
        ("SAMSum", "test_examples", 818, "examples", ""),
    ),
    *_rows(
        "002",
        "Fine-Tuning with Model Quantization and LoRA",
        ("Falcon-7B", "pretraining_tokens", 1.5e12, "tokens", "RefinedWeb plus curated corpora"),
        ("LoRA", "r", 16, "", ""),
        ("LoRA", "lora_alpha", 32, "", ""),
        ("LoRA", "lora_dropout", 0.1, "", ""),
        ("Falcon-7B QLoRA", "trainable_params", 32_636_928, "parameters", ""),
        ("Falcon-7B QLoRA", "total_params", 6_954_357_632, "parameters", ""),
        ("Falcon-7B QLoRA", "trainable_percent", 0.47, "%", ""),
    ),
    *_rows(
        "002",
        "Set up the Configuration for Training",
        ("Falcon-7B QLoRA", "per_device_train_batch_size", 32, "examples", ""),
        ("Falcon-7B QLoRA", "gradient_accumulation_steps", 4, "steps", ""),
        ("Falcon-7B QLoRA", "learning_rate", 2e-4, "", "cosine schedule"),
        ("Falcon-7B QLoRA", "max_grad_norm", 0.1, "", ""),
        ("Falcon-7B QLoRA", "warmup_ratio", 0.01, "", ""),
        ("Falcon-7B QLoRA", "epochs", 5, "epochs", "the output folder's name says epoch10"),
        ("Falcon-7B QLoRA", "max_seq_length", 512, "tokens", ""),
        ("Falcon-7B QLoRA", "logging_steps", 20, "steps", "checkpoints saved as often"),
        ("Falcon-7B QLoRA", "train_minutes", 180, "min", "'approximately 3 hours' on one A100"),
    ),
    *_rows(
        "002",
        "Model Inference of the Fine-Tuned Model",
        ("generation", "max_new_tokens", 50, "tokens", ""),
        ("generation", "max_length", 512, "tokens", ""),
        ("generation", "temperature", 0.1, "", ""),
        ("generation", "top_k", 1, "", ""),
        ("generation", "repetition_penalty", 30.0, "", ""),
    ),
    *_rows(
        "002",
        "Evaluation of Summarization Quality",
        *[
            ("Falcon-7B QLoRA", m, None, "/5", "not published")
            for m in ("relevance", "coherence", "consistency", "fluency")
        ],
    ),
]

# Seed 003's training log: (step, training loss, validation loss), logged every 25 steps.
_PHI2_LOG = (
    (25, 1.3978, 1.333857), (50, 1.1161, 1.350984), (75, 1.3938, 1.334511), (100, 1.1404, 1.354389),
    (125, 1.3917, 1.330908), (150, 1.0788, 1.354294), (175, 1.3645, 1.330168), (200, 1.0889, 1.339763),
    (225, 1.4051, 1.328655), (250, 1.1704, 1.334475), (275, 1.4177, 1.329436), (300, 1.1127, 1.333537),
    (325, 1.4047, 1.324971), (350, 1.1951, 1.324806), (375, 1.3927, 1.322739), (400, 1.1797, 1.324676),
    (425, 1.4326, 1.320145), (450, 1.1904, 1.319838), (475, 1.4418, 1.319327), (500, 1.1823, 1.320529),
    (525, 1.3836, 1.319332), (550, 1.1138, 1.322372), (575, 1.3205, 1.321091), (600, 1.1565, 1.322022),
    (625, 1.3447, 1.319742), (650, 1.0882, 1.321404), (675, 1.3532, 1.319358), (700, 1.0959, 1.321509),
    (725, 1.3936, 1.318529), (750, 1.1303, 1.319043), (775, 1.412, 1.317904), (800, 1.1083, 1.318485),
    (825, 1.3787, 1.318102), (850, 1.0997, 1.318476), (875, 1.4261, 1.317419), (900, 1.1161, 1.317294),
    (925, 1.3374, 1.317082), (950, 1.1195, 1.317067), (975, 1.3138, 1.316914), (1000, 1.0832, 1.316937),
)  # fmt: skip

_PHI2 = [
    *_rows(
        "003",
        "Dataset Information",
        ("DialogSum", "dialogues", 13_460, "dialogues", ""),
    ),
    *_rows(
        "003",
        "About LLM used",
        ("Phi-2", "parameters", 2.7e9, "parameters", ""),
    ),
    *_rows(
        "003",
        "PEFT Configs",
        ("LoRA", "r", 32, "", "on q_proj, k_proj, v_proj and dense"),
        ("LoRA", "lora_alpha", 32, "", ""),
        ("LoRA", "lora_dropout", 0.05, "", ""),
    ),
    *_rows(
        "003",
        "Model Training Parameters",
        ("Phi-2 QLoRA", "warmup_steps", 1, "steps", ""),
        ("Phi-2 QLoRA", "per_device_train_batch_size", 1, "examples", ""),
        ("Phi-2 QLoRA", "gradient_accumulation_steps", 4, "steps", ""),
        ("Phi-2 QLoRA", "max_steps", 1000, "steps", ""),
        ("Phi-2 QLoRA", "learning_rate", 2e-4, "", ""),
        ("Phi-2 QLoRA", "logging_steps", 25, "steps", "evaluated and saved as often"),
    ),
    *_rows(
        "003",
        "Model Training Performance",
        ("Phi-2 QLoRA", "global_step", 1000, "steps", ""),
        ("Phi-2 QLoRA", "train_loss", 1.2568040847778321, "loss", "mean training loss over the run"),
        ("Phi-2 QLoRA", "train_seconds", 1944.0332, "s", "train_runtime"),
        ("Phi-2 QLoRA", "train_samples_per_second", 2.058, "samples/s", ""),
        ("Phi-2 QLoRA", "train_steps_per_second", 0.514, "steps/s", ""),
        ("Phi-2 QLoRA", "total_flos", 1.850993530739712e16, "FLOs", ""),
        ("Phi-2 QLoRA", "epoch", 2.001000500250125, "epochs", ""),
    ),
    *[
        Reference("003", "Training log", "Phi-2 QLoRA", f"{name}@{step}", value, "loss", "")
        for step, loss, eval_loss in _PHI2_LOG
        for name, value in (("loss", loss), ("eval_loss", eval_loss))
    ],
    *_rows(
        "003",
        "Model Weights saving and inferencing",
        ("Phi-2 QLoRA", "lora_weight_share", 1.36, "%", "share of the weights the LoRA adapter holds"),
    ),
]

_OVERVIEW = [
    *_rows(
        "004",
        "Why Fine-tune?",
        ("InstructGPT", "parameters", 1.3e9, "parameters", "outperformed GPT-3 (175B)"),
        ("GPT-3", "parameters", 175e9, "parameters", ""),
    ),
    *_rows(
        "004",
        "Fine-tune model via supervised learning",
        ("pre-training", "tokens", 3e12, "tokens", "'around 3 trillion tokens'"),
    ),
    *_rows(
        "004",
        "LoRA: practical example",
        ("dataset", "examples", 1000, "examples", "'may be enough'"),
    ),
    *_rows(
        "004",
        "QLoRA",
        ("QLoRA paper", "r", 64, "", ""),
        ("QLoRA paper", "lora_alpha", 16, "", ""),
        ("QLoRA paper", "r_range_without_effect_low", 8, "", "rank may not matter between 8 and 256"),
        ("QLoRA paper", "r_range_without_effect_high", 256, "", ""),
        ("LLaMA-65B", "memory_16bit", 300, "GB", "'over 300GB'"),
        ("LLaMA-65B", "memory_4bit", 60, "GB", "'around 60GB'"),
    ),
    *_rows(
        "004",
        "How to do IFT on OpenAI GPT models?",
        ("OpenAI fine-tuning", "min_examples", 10, "examples", ""),
        ("OpenAI fine-tuning", "examples_for_clear_gains_low", 50, "examples", "50 to 100 examples"),
        ("OpenAI fine-tuning", "examples_for_clear_gains_high", 100, "examples", ""),
    ),
]

REFERENCE: tuple[Reference, ...] = (*_TWEETSUMM, *_FLAN_T5, *_FALCON, *_PHI2, *_OVERVIEW)


def reference(document: str | None = None, table: str | None = None) -> pd.DataFrame:
    """The published numbers as a table (columns of `Reference`), optionally of one document and table."""
    rows = list(REFERENCE)
    if document is not None:
        if document not in DOCUMENTS:
            raise ValueError(f"unknown document {document!r}; expected one of {', '.join(DOCUMENTS)}")
        rows = [r for r in rows if r.document == document]
    if table is not None:
        tables = list(dict.fromkeys(r.table for r in rows))
        if table not in tables:
            raise ValueError(
                f"no table {table!r} in document {document!r}; expected one of: {', '.join(tables)}"
            )
        rows = [r for r in rows if r.table == table]
    return pd.DataFrame([asdict(r) for r in rows], columns=list(Reference.__dataclass_fields__))


def reference_log_history(document: str = "003", table: str = "Training log") -> list[dict[str, float]]:
    """A document's logged losses in `trainer.state.log_history` shape, ready for `plots.loss_curves`."""
    history = []
    for row in reference(document, table).itertuples():
        name, step = row.metric.split("@")
        history.append({"step": int(step), name: row.value})
    return history


def _run_label(rows: Sequence[Mapping[str, Any]]) -> str:
    """`this run (<profile>, <device>, judge: <judge>)` from the values the records hold."""

    def distinct(name: str) -> str:
        return " / ".join(dict.fromkeys(str(v) for v in (field(r, name) for r in rows) if v is not None))

    parts = [p for p in (distinct("profile"), distinct("device")) if p]
    judge = distinct("judge")
    if judge:
        parts.append(f"judge: {judge}")
    return f"this run ({', '.join(parts)})" if parts else "this run"


def side_by_side(
    document: str,
    table: str,
    measured: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    key: str = "configuration",
) -> pd.DataFrame:
    """The document's numbers of one table beside this run's, matched by `key` (a record field, score or extra).

    One row per published number; the run's column header names the profile, device and judge the
    records carry. A configuration without a record reads "not run", a record marked failed reads
    "failed (<reason>)", and a metric the record lacks reads "not measured".
    """
    rows = measured.to_dict("records") if isinstance(measured, pd.DataFrame) else list(measured)
    by_key = {field(r, key): r for r in rows}
    label = _run_label(rows)
    table_rows = []
    for ref in reference(document, table).itertuples():
        run = by_key.get(ref.configuration)
        if run is None:
            ours = "not run"
        else:
            value = field(run, ref.metric)
            if isinstance(value, float):
                value = float(f"{value:.4g}")  # the documents print 2-4 digits; match them
            ours = failure(run) or ("not measured" if value is None else value)
        published = (
            ref.value if ref.value is not None and not math.isnan(ref.value) else ref.note or "not published"
        )
        table_rows.append(
            {
                "configuration": ref.configuration,
                "metric": ref.metric,
                "unit": ref.unit,
                "document": published,
                label: ours,
            }
        )
    return pd.DataFrame(table_rows, columns=["configuration", "metric", "unit", "document", label])
