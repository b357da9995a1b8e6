"""The recipes the notebooks repeat, written once: summarize a test set, grade it, record it.

Every configuration in the TWEETSUMM lessons (base, full fine-tune, LoRA, QLoRA; DistilGPT2 and
Llama-2-7B) is evaluated the same way: generate a summary for each test conversation, grade the
summaries with the rubric, and write one results record that tables and Figure 1 are drawn from.
Keeping that sequence here means a notebook cell says *what* is evaluated, not how.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tutorlib import generate, grading, memory, results, train
from tutorlib.templates import Template


@dataclass
class Evaluation:
    """What `evaluate` produced: the summaries, one grade row per summary, the totals and the record written."""

    experiment: str
    configuration: str
    summaries: list[str]
    grades: pd.DataFrame
    totals: dict[str, Any]
    record: Path

    def table(self) -> pd.DataFrame:
        """Points per criterion and in total, out of the maximum over the summaries that were graded."""
        t = self.totals
        rows = {name: (points, t["criteria_max"][name]) for name, points in t["criteria"].items()}
        rows["total"] = (t["total"], t["max_total"])
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=["points", "out of"])
        return frame.rename_axis(f"{self.configuration} · graded {t['graded']}, failed {t['failed']}")


def grading_report(totals: Mapping[str, Any]) -> str:
    """One line on how a set of summaries was graded: judge, graded/failed counts, tokens and estimated cost."""
    cost = totals.get("cost_usd")
    price = "free" if cost == 0 else ("cost unknown" if cost is None else f"~${cost:.4f}")
    note = f" ({totals['price_note']})" if totals.get("price_note") and cost else ""
    return (
        f"judge {totals['judge']}: graded {totals['graded']}, failed {totals['failed']} (failures are not "
        f"scored); tokens {totals['input_tokens']:,} in / {totals['output_tokens']:,} out, {price}{note}"
    )


def scores_from(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The score fields a results record keeps from `grading.summarize_grades` output."""
    return {
        "total": totals["total"],
        **totals["criteria"],
        "max_total": totals["max_total"],
        "graded": totals["graded"],
        "failed": totals["failed"],
    }


def _grade_and_record(
    items: list[dict[str, Any]],
    summaries: list[str],
    *,
    judge: grading.LLMJudge | grading.OfflineJudge,
    rubric: str,
    profile: Any,
    experiment: str,
    notebook: str,
    configuration: str,
    model_name: str,
    method: str,
    run: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Grade the items, print how, and write the record (with the run's time and memory when there is one)."""
    grades = grading.grade_many(judge, rubric, items)
    totals = grading.summarize_grades(grades, rubric)
    print(grading_report(totals))
    common = {
        "notebook": notebook,
        "profile": profile,
        "model": model_name,
        "scores": scores_from(totals),
        "judge": totals["judge"],
        "extra": {"configuration": configuration, "test_examples": len(items), **(extra or {})},
    }
    if run is not None:
        path = results.record_run(experiment, run, **common)
    else:
        path = results.record(experiment, method=method, **common)
    return Evaluation(experiment, configuration, summaries, grades, totals, path)


def evaluate(
    model: Any,
    tokenizer: Any,
    test: Any,
    *,
    template: Template,
    judge: grading.LLMJudge | grading.OfflineJudge,
    profile: Any,
    experiment: str,
    notebook: str,
    configuration: str,
    model_name: str,
    method: str,
    run: Any = None,
    rubric: str = "tweetsumm",
    extra: Mapping[str, Any] | None = None,
    **generation_kwargs: Any,
) -> Evaluation:
    """Summarize every test dialogue, grade the summaries, and record the result under `experiment`.

    `test` is a test split (columns `dialogue`, `references`, optionally `id`); `run` is the training
    result when the model was fine-tuned (its time and peak memory go into the record); generation
    settings default to the profile's (`max_new_tokens`, `batch_size`) and can be overridden.
    """
    settings = profile.generation_args(**generation_kwargs)
    prompts = [template.prompt(d) for d in test["dialogue"]]
    summaries = generate.summarize(model, tokenizer, prompts, template=template, **settings)
    ids = test["id"] if "id" in test.column_names else list(range(len(prompts)))
    items = [
        {"id": i, "dialogue": d, "summary": s, "references": refs}
        for i, d, s, refs in zip(ids, test["dialogue"], summaries, test["references"], strict=True)
    ]
    return _grade_and_record(
        items,
        summaries,
        judge=judge,
        rubric=rubric,
        profile=profile,
        experiment=experiment,
        notebook=notebook,
        configuration=configuration,
        model_name=model_name,
        method=method,
        run=run,
        extra=extra,
    )


def evaluate_references(
    test: Any,
    *,
    judge: grading.LLMJudge | grading.OfflineJudge,
    profile: Any,
    experiment: str,
    notebook: str,
    rubric: str = "tweetsumm",
) -> Evaluation:
    """Grade one human summary per conversation against the others: what the judge gives a good summary.

    The first reference plays the model's part and the remaining ones are the references, so the
    offline proxy cannot simply match a summary against itself. A conversation with a single
    reference has nothing to compare against and shows up as a failed judgment, not as zero.
    """
    summaries = [refs[0] if refs else "" for refs in test["references"]]
    items = [
        {"id": i, "dialogue": d, "summary": s, "references": refs[1:]}
        for i, (d, s, refs) in enumerate(zip(test["dialogue"], summaries, test["references"], strict=True))
    ]
    return _grade_and_record(
        items,
        summaries,
        judge=judge,
        rubric=rubric,
        profile=profile,
        experiment=experiment,
        notebook=notebook,
        configuration="Human reference (leave-one-out)",
        model_name="human",
        method="reference",
    )


def record_failure(
    experiment: str,
    *,
    attempt: Any,
    notebook: str,
    profile: Any,
    configuration: str,
    model_name: str,
    method: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Record a run that did not finish (e.g. out of memory) so tables and Figure 1 show it as failed."""
    estimate = getattr(attempt, "estimate", None)
    info = {
        "configuration": configuration,
        "failed": "OOM",
        "error": getattr(attempt, "error", None),
        "estimate_gb": None if estimate is None else round(estimate.total_gb, 2),
        **(extra or {}),
    }
    return results.record(
        experiment,
        notebook=notebook,
        profile=profile,
        model=model_name,
        method=method,
        scores={},
        peak_memory_mb=getattr(attempt, "peak_mb", None),
        memory_kind=getattr(attempt, "kind", None),
        extra=info,
    )


def latest_records(profile_name: str, configurations: list[str]) -> list[dict[str, Any]]:
    """The newest record of each named configuration, in the order given; missing ones are named, not invented."""
    newest: dict[str, dict[str, Any]] = {}
    for rec in results.load_records(profile_name):  # oldest first, so later ones win
        newest[str(results.field(rec, "configuration"))] = rec
    missing = [c for c in configurations if c not in newest]
    if missing:
        print(f"no {profile_name} record yet for: {', '.join(missing)} (run the notebook that makes it)")
    return [newest[c] for c in configurations if c in newest]


def memory_savings(profile_name: str, *, baseline: str, others: list[str]) -> pd.DataFrame:
    """Peak memory of each configuration below the `baseline` run's, measured, beside the document's saving."""
    recs = {
        str(results.field(r, "configuration")): r for r in latest_records(profile_name, [baseline, *others])
    }
    published = results.reference("000").query("metric == 'peak_memory_saving_mb'")
    doc = dict(zip(published["configuration"], published["value"], strict=True))
    base = recs.get(baseline)
    rows = []
    for name in others:
        run = recs.get(name)
        peak = None if run is None else run.get("peak_memory_mb")
        saving = None if base is None or peak is None else base["peak_memory_mb"] - peak
        kind = None if run is None else run.get("memory_kind")
        rows.append(
            {
                "configuration": name,
                "document: MB saved (V100, cuda)": doc.get(name),
                f"this run: peak MB ({kind})": peak,
                "this run: MB saved": saving,
            }
        )
    return pd.DataFrame(rows).set_index("configuration").round(1)


def attempt_finetune(
    model_name: str,
    dataset: Any,
    *,
    method: str,
    template: Template,
    profile: Any,
    callbacks: list[Any],
    **overrides: Any,
) -> memory.Attempt:
    """Try a fine-tune that may not fit: an out-of-memory error is caught and reported, memory freed either way.

    The estimate beside the measured peak is for the model actually loaded (`profile.model(name)`:
    the real architecture under `full`, the stand-in under `smoke`). A run that fits keeps its numbers
    in the returned attempt but drops its weights, since this is a fit check, not a training run.
    """
    est = memory.estimate(profile.model(model_name), method=method, dtype=profile.dtype_for(model_name))
    att = memory.attempt(
        lambda: train.finetune(
            model_name,
            dataset,
            method=method,
            template=template,
            profile=profile,
            callbacks=callbacks,
            **overrides,
        ),
        estimate=est,
        label=f"{model_name} {method}",
    )
    if att.ok:
        memory.free(att.result.model)
    return att
