"""tutorlib.course: the evaluate / record recipes the notebooks repeat, on the stand-ins with the offline judge."""

from __future__ import annotations

import json

import pytest

from tutorlib import course, data, grading, memory, results, train
from tutorlib.profile import detect
from tutorlib.templates import TEMPLATES


@pytest.fixture(scope="module")
def setup():
    profile = detect("smoke")
    tweetsumm = data.load("tweetsumm")
    test = data.take(tweetsumm["test"], 3)
    return profile, tweetsumm, test, TEMPLATES["tweetsumm"], grading.OfflineJudge()


def test_evaluate_summarizes_grades_and_records(setup):
    profile, _, test, template, judge = setup
    model, tok = train.load_model("distilgpt2", profile=profile)
    ev = course.evaluate(
        model,
        tok,
        test,
        template=template,
        judge=judge,
        profile=profile,
        notebook="nb",
        experiment="t_base",
        configuration="DistilGPT2 base",
        model_name="distilgpt2",
        method="base",
        max_new_tokens=8,
    )
    assert len(ev.summaries) == len(ev.grades) == 3
    rec = json.loads(ev.record.read_text())
    assert (
        rec["scores"]["graded"] + rec["scores"]["failed"] == 3
        and rec["scores"]["max_total"] == 3 * rec["scores"]["graded"]
    )
    assert rec["extra"]["configuration"] == "DistilGPT2 base" and rec["judge"] == judge.label
    table = ev.table()
    assert list(table.index) == ["customer", "agent", "two_sentences", "total"]


def test_human_references_score_above_zero_with_the_proxy(setup):
    profile, _, test, _, judge = setup
    ev = course.evaluate_references(test, judge=judge, profile=profile, experiment="t_human", notebook="nb")
    # The bundled references are two-sentence summaries of the same conversations, so the proxy must
    # award them points; a model of gibberish gets none.
    assert ev.totals["total"] > 0 and ev.totals["criteria"]["two_sentences"] == ev.totals["graded"]


def test_failed_attempt_is_recorded_and_fitting_one_frees_the_model(setup):
    profile, tweetsumm, _, template, _ = setup
    tight = [memory.TensorBudget(0.01)]
    att = course.attempt_finetune(
        "distilgpt2",
        tweetsumm,
        method="full",
        template=template,
        profile=profile,
        callbacks=tight,
        max_steps=2,
    )
    assert not att.ok and "budget" in att.error
    path = course.record_failure(
        "t_full_oom",
        attempt=att,
        notebook="nb",
        profile=profile,
        configuration="DistilGPT2 full fine-tune",
        model_name="distilgpt2",
        method="full",
    )
    assert results.failure(json.loads(path.read_text())) == "failed (OOM)"
    ok = course.attempt_finetune(
        "distilgpt2", tweetsumm, method="lora", template=template, profile=profile, callbacks=[], max_steps=2
    )
    assert ok.ok and sum(p.numel() for p in ok.result.model.parameters()) == 0  # freed: weights dropped


def test_latest_records_keeps_order_and_names_missing(setup, capsys):
    profile = setup[0]
    for name, total in (("A", 1), ("B", 2), ("A", 3)):
        results.record(
            f"t_{name.lower()}_{total}",
            notebook="nb",
            profile=profile,
            model="m",
            method="x",
            scores={"total": total},
            extra={"configuration": name},
        )
    recs = course.latest_records(profile.name, ["B", "A", "C"])
    assert [(r["extra"]["configuration"], r["scores"]["total"]) for r in recs] == [("B", 2), ("A", 3)]
    assert "C" in capsys.readouterr().out


def test_memory_savings_subtracts_peaks(setup):
    profile = setup[0]
    for name, mb in (("DistilGPT2 full fine-tune", 900.0), ("DistilGPT2 LoRA", 700.0)):
        results.record(
            f"t_mem_{mb:.0f}",
            notebook="nb",
            profile=profile,
            model="m",
            method="x",
            scores={},
            peak_memory_mb=mb,
            memory_kind="cpu_rss",
            extra={"configuration": name},
        )
    table = course.memory_savings(
        profile.name, baseline="DistilGPT2 full fine-tune", others=["DistilGPT2 LoRA"]
    )
    assert table.loc["DistilGPT2 LoRA", "this run: MB saved"] == 200.0
    assert table.loc["DistilGPT2 LoRA", "document: MB saved (V100, cuda)"] == 228.0


def test_grading_report_names_judge_counts_and_cost():
    totals = {
        "judge": "llm:gpt-4o@api.openai.com",
        "graded": 48,
        "failed": 2,
        "input_tokens": 51234,
        "output_tokens": 4100,
        "cost_usd": 0.169,
        "price_note": "as of writing",
    }
    line = course.grading_report(totals)
    assert (
        "graded 48, failed 2" in line
        and "51,234 in" in line
        and "~$0.1690" in line
        and "as of writing" in line
    )
    assert "cost unknown" in course.grading_report({**totals, "cost_usd": None})
    assert "free" in course.grading_report({**totals, "cost_usd": 0.0})
