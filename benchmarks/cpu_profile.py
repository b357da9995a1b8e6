"""What the `cpu` profile costs on this machine, per method: seconds per training step, tokens per
second, seconds per summary and peak memory (SmolLM2-135M-Instruct, fp32, the profile's settings).

    .venv/bin/python benchmarks/cpu_profile.py            # every method, ~10 min

It trains the registry's Llama-2-7B plan (which SmolLM2 plays under cpu) for a few steps with each
method on the bundled TWEETSUMM data and summarizes test dialogues, inside `memory.track()`.
Records go to benchmarks/results/cpu_costs.json (device, threads, library versions) and the table
to cpu_costs.md. What each whole notebook costs under cpu is measured by `make executed`
(executed/index.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tutorlib import data, env, generate, memory, models, train
from tutorlib.profile import detect
from tutorlib.templates import TEMPLATES

RESULTS = Path(__file__).resolve().parent / "results"


def context() -> dict[str, Any]:
    return {
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "profile": "cpu",
        "library_versions": env.library_versions(),
        "measured_at": time.strftime("%Y-%m-%d"),
    }


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def method_costs(method: str, steps: int, summaries: int) -> dict[str, Any]:
    """Seconds per training step, tokens per second, seconds per summary and peak RSS."""
    profile = detect("cpu")
    plan = profile.plan("llama-2-7b", method, max_steps=steps, eval_strategy="no")
    tweetsumm, timer = data.load("tweetsumm", profile=profile), StepTimer()
    with memory.track() as usage:
        run = train.finetune(plan, tweetsumm, template=TEMPLATES["tweetsumm"], callbacks=[timer])
    gaps = [b - a for a, b in zip(timer.times, timer.times[1:], strict=False)]
    per_step = statistics.median(gaps) if gaps else run.seconds / steps
    rows = plan.args["per_device_train_batch_size"] * plan.args["gradient_accumulation_steps"]
    tokens = statistics.mean(len(run.tokenizer(t).input_ids) for t in _texts(tweetsumm)) * rows
    test = data.take(tweetsumm["test"], summaries)
    prompts = [TEMPLATES["tweetsumm"].prompt(d) for d in test["dialogue"]]
    start = time.perf_counter()
    generate.summarize(run.model, run.tokenizer, prompts, **profile.generation_args())
    generating = (time.perf_counter() - start) / len(prompts)
    return {
        "method": method,
        "steps": steps,
        "seconds_per_step": round(per_step, 2),
        "tokens_per_second": round(tokens / per_step),
        "seconds_per_summary": round(generating, 2),
        "peak_rss_mb": round(usage.peak_mb),
        "loss_first_last": [round(run.losses[0], 2), round(run.losses[-1], 2)],
        "settings": {k: plan.args[k] for k in ("per_device_train_batch_size", "max_length")},
    }


def _texts(tweetsumm: Any) -> list[str]:
    template = TEMPLATES["tweetsumm"]
    rows = data.take(tweetsumm["train"], 40)
    return [template.text(d, s) for d, s in zip(rows["dialogue"], rows["summary"], strict=True)]


def write(name: str, records: list[dict[str, Any]], columns: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in records]
    device = records[0]["device"] if records else ""
    text = "\n".join(lines) + f"\n\nMeasured on {device}, profile cpu, fp32.\n"
    (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--summaries", type=int, default=16)
    args = parser.parse_args(argv)
    records = [method_costs(m, args.steps, args.summaries) | context() for m in models.METHODS]
    columns = ["method", "seconds_per_step", "tokens_per_second", "seconds_per_summary"]
    write("cpu_costs", records, [*columns, "peak_rss_mb", "loss_first_last"])


if __name__ == "__main__":
    main()
