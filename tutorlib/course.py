"""One `Lesson` per notebook holds the profile, judge, template and rubric: evaluating is one call,
`lesson.evaluate(model, tokenizer, test, "DistilGPT2 LoRA", trained=run)`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tutorlib import generate, grading, metrics, models, paths, results
from tutorlib.profile import Profile
from tutorlib.templates import TEMPLATES, Template

# Which notebook records each TWEETSUMM configuration, so a table can say where a gap comes from.
_MADE_IN = {
    "01": ["Human reference (leave-one-out)", "DistilGPT2 base", "DistilGPT2 full fine-tune"],
    "02": ["Llama-2-7B base", "Llama-2-7B full fine-tune"],
    "03": ["DistilGPT2 LoRA", "DistilGPT2 QLoRA", "Llama-2-7B LoRA", "Llama-2-7B QLoRA"],
}
PRODUCERS = {name: notebook for notebook, names in _MADE_IN.items() for name in names}


@dataclass
class Evaluation:
    """What `evaluate` produced: summaries, one grade row per summary, totals and the record."""

    configuration: str
    summaries: list[str]
    grades: pd.DataFrame
    totals: dict[str, Any]
    record: Path

    def table(self) -> pd.DataFrame:
        """Points per criterion and in total out of the graded maximum, or ROUGE with 95 % CIs."""
        t = self.totals
        if "rouge" in t:
            label = f"{self.configuration} · {len(self.summaries)} summaries"
            return t["rouge"].round(4).rename_axis(label)
        rows = {name: (points, t["criteria_max"][name]) for name, points in t["criteria"].items()}
        rows["total"] = (t["total"], t["max_total"])
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=["points", "out of"])
        label = f"{self.configuration} · graded {t['graded']}, failed {t['failed']}"
        return frame.rename_axis(label)


class Lesson:
    """The bookkeeping of one notebook: where records go, which judge grades, which template
    prompts. Everything is checked here, before any model is loaded or summary generated."""

    def __init__(
        self,
        notebook: str,
        profile: Profile,
        *,
        template: str | Template,
        rubric: str = "tweetsumm",
        judge: Any = None,
    ) -> None:
        """`rubric` names a `grading.RUBRICS` entry graded by `judge` (default: `choose_judge()`),
        or is "rouge": ROUGE against the references, with bootstrap intervals, and no judge."""
        if isinstance(template, str) and template not in TEMPLATES:
            known = ", ".join(TEMPLATES)
            raise ValueError(f"unknown template {template!r}; expected one of: {known}")
        if rubric != "rouge" and rubric not in grading.RUBRICS:
            known = ", ".join([*grading.RUBRICS, "rouge"])
            raise ValueError(f"unknown rubric {rubric!r}; expected one of: {known}")
        if judge is not None and not callable(getattr(judge, "grade", None)):
            raise ValueError(f"judge {judge!r} has no grade() method; expected a grading judge")
        self.notebook, self.profile, self.rubric = notebook, profile, rubric
        self.template = TEMPLATES[template] if isinstance(template, str) else template
        self.judge = judge if judge is not None or rubric == "rouge" else grading.choose_judge()

    def evaluate(
        self, model: Any, tokenizer: Any, test: Any, configuration: str, trained: Any = None
    ) -> Evaluation:
        """Summarize every test dialogue, grade the summaries and record them under `configuration`.
        `trained` is the `train.Run` of a fine-tuned model: its time, peak memory and parameter
        counts go into the record. Without it the model is recorded as a base model."""
        prompts = [self.template.prompt(d) for d in test["dialogue"]]
        settings = self.profile.generation_args()
        if sum(p.numel() for p in model.parameters()) > 3e9:  # a 7B model on a 16 GB card
            settings["batch_size"] = min(settings["batch_size"], 2)
        summaries = generate.summarize(
            model, tokenizer, prompts, template=self.template, **settings
        )
        columns = (test["id"], test["dialogue"], summaries, test["references"])
        items = [
            {"id": i, "dialogue": d, "summary": s, "references": r}
            for i, d, s, r in zip(*columns, strict=True)
        ]
        name = trained.model_name if trained else _model_name(model, configuration)
        method = trained.method if trained else "base"
        return self.grade(items, configuration, model=name, method=method, trained=trained)

    def references(self, test: Any) -> Evaluation:
        """Grade each dialogue's first human summary against its other ones: the judge's ceiling.
        The offline proxy compares with references, so for it a dialogue with a single reference is
        a failed judgment (counted, not zero); an LLM judge grades against the dialogue itself."""
        items = [
            {"id": i, "dialogue": d, "summary": r[0] if r else "", "references": r[1:]}
            for i, d, r in zip(test["id"], test["dialogue"], test["references"], strict=True)
        ]
        single = sum(len(r) < 2 for r in test["references"])
        if single and isinstance(self.judge, grading.OfflineJudge):
            print(
                f"{single} of {len(items)} dialogues have one reference only: "
                "nothing to grade it against"
            )
        configuration = "Human reference (leave-one-out)"
        return self.grade(items, configuration, model="human", method="reference")

    def grade(
        self, items: list[dict], configuration: str, *, model: str, method: str, trained: Any = None
    ) -> Evaluation:
        """Score summaries made elsewhere (items: id, dialogue, summary, references) and record."""
        summaries = [i["summary"] for i in items]
        if self.rubric == "rouge":
            table = metrics.rouge_with_ci(summaries, [i["references"] for i in items])
            grades, totals = table, {"rouge": table, "judge": metrics.JUDGE}
            ends = {"score": "", "low": "_low", "high": "_high"}
            scores = {f"{k}{ends[col]}": v for col in ends for k, v in table[col].items()}
        else:
            grades = grading.grade_many(self.judge, self.rubric, items)
            totals = grading.summarize_grades(grades, self.rubric)
            print(grading.report(totals))
            counts = {k: totals[k] for k in ("total", "max_total", "graded", "failed")}
            scores = {**totals["criteria"], **counts}
        fields: dict[str, Any] = {"judge": totals["judge"], "test_examples": len(items)}
        if trained is not None:
            fields["usage"] = trained.usage
            fields["trainable_params"] = trained.trainable_params
            fields["total_params"] = trained.total_params
        path = self.record(configuration, model=model, method=method, scores=scores, **fields)
        return Evaluation(configuration, summaries, grades, totals, path)

    def record(
        self,
        configuration: str,
        *,
        model: str,
        method: str,
        scores: dict,
        usage: Any = None,
        judge: str | None = None,
        **extra: Any,
    ) -> Path:
        """Write this configuration's results record; `usage` is a `memory.Usage` (time, peak)."""
        return results.record(
            self._experiment(configuration),
            profile=self.profile,
            secrets=[getattr(self.judge, "api_key", None)],
            notebook=self.notebook,
            model=model,
            stand_in=self.profile.stand_in(model) if model in models.MODELS else None,
            method=method,
            scores=scores,
            judge=judge,
            extra={"configuration": configuration, **extra},
            train_seconds=usage.seconds if usage else None,
            peak_memory_mb=usage.peak_mb if usage else None,
            memory_kind=usage.kind if usage else None,
        )

    def _experiment(self, configuration: str) -> str:
        """`NN_<configuration in a-z0-9_>`; where that file holds another configuration (names
        that differ only in case, accents or punctuation), the name gets a hash of its own."""
        slug = re.sub(r"[^a-z0-9]+", "_", configuration.lower()).strip("_")
        name = f"{self.notebook[:2]}_{slug}".rstrip("_")
        path = paths.results_dir(self.profile.name) / f"{name}.json"
        if path.exists() and results.configuration_in(path) not in (None, configuration):
            name += "-" + hashlib.sha256(configuration.encode()).hexdigest()[:8]
        return name

    def failed(
        self, configuration: str, error: BaseException, *, model: str, method: str, **extra: Any
    ) -> Path:
        """Record a run that did not finish (e.g. out of memory): tables and Figure 1 show it as
        failed."""
        kind = "OOM" if isinstance(error, (MemoryError, torch.OutOfMemoryError)) else "error"
        problem = {"failed": kind, "error": str(error)[:300]}
        return self.record(configuration, model=model, method=method, scores={}, **problem, **extra)

    def records(self, configurations: list[str]) -> list[dict[str, Any]]:
        """The newest record of each configuration; missing ones are named with the notebook that
        makes them."""
        return results.latest(self.profile.name, configurations, producers=PRODUCERS)


def _model_name(model: Any, configuration: str) -> str:
    """The registry name of a loaded model: from its hub id or stand-in folder; else (SmolLM2,
    which plays every decoder under `cpu`) from the configuration's name, "Llama-2-7B base"."""
    path = str(getattr(model, "name_or_path", "")).rstrip("/")
    for spec in models.MODELS.values():
        if path in (spec.hub_id, spec.name) or Path(path).name.startswith(f"{spec.name}-"):
            return spec.name
    plain = re.sub(r"[^a-z0-9]", "", configuration.lower())
    named = [n for n in models.MODELS if plain.startswith(re.sub(r"[^a-z0-9]", "", n))]
    return max(named, key=len) if named else Path(path).name or "unknown"
