"""What the `cpu` profile costs on this machine: each notebook's minutes and peak memory, and the
training and generation costs behind them (SmolLM2-135M-Instruct, fp32, the profile's settings).

    .venv/bin/python benchmarks/cpu_profile.py notebooks            # every notebook, ~1 h
    .venv/bin/python benchmarks/cpu_profile.py notebooks 01 03      # some of them
    .venv/bin/python benchmarks/cpu_profile.py costs                # per method, ~10 min

`notebooks` runs `python -m tools run NN` under `TUTORLIB_PROFILE=cpu` in a fresh process per
notebook (its own results and runs folders, as on a fresh machine) and samples the resident memory
of the whole process tree (the runner and the notebook's kernel) every 0.2 s. `costs` trains the
registry's Llama-2-7B plan (which SmolLM2 plays) for a few steps with each method on the bundled
TWEETSUMM data and summarizes test dialogues, inside `memory.track()`. Records go to
benchmarks/results/cpu_notebooks.json and cpu_costs.json (device, threads, library versions) and
the tables to the .md files beside them; README's notebook table reads the minutes from there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from transformers import TrainerCallback

from tutorlib import data, env, generate, memory, models, paths, train
from tutorlib.profile import detect
from tutorlib.templates import TEMPLATES

RESULTS = Path(__file__).resolve().parent / "results"


def course_notebooks() -> list[Path]:
    return sorted((paths.root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def context() -> dict[str, Any]:
    return {
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "profile": "cpu",
        "library_versions": env.library_versions(),
        "measured_at": time.strftime("%Y-%m-%d"),
    }


def peak_rss(process: subprocess.Popen, interval_s: float = 0.2) -> float:
    """Wait for `process`, sampling the resident memory of it and its children; peak in MB."""
    parent, peak = psutil.Process(process.pid), 0.0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree) / 2**20)
        except psutil.NoSuchProcess:
            pass
        time.sleep(interval_s)
    return peak


def run_notebook(number: str) -> dict[str, Any]:
    """One notebook under cpu in a fresh process, with empty results and runs folders."""
    with tempfile.TemporaryDirectory() as fresh:
        environment = os.environ | {"TUTORLIB_PROFILE": "cpu", "HF_HUB_OFFLINE": "1"}
        environment |= {"TUTORLIB_RESULTS": f"{fresh}/results", "TUTORLIB_RUNS": f"{fresh}/runs"}
        command = [sys.executable, "-m", "tools", "run", number]
        start = time.perf_counter()
        root = paths.root()  # `python -m tools` runs from the repository's root
        process = subprocess.Popen(
            command, cwd=root, env=environment, stdout=subprocess.PIPE, text=True
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        peak = peak_rss(process)
        reader.join()
        minutes = (time.perf_counter() - start) / 60
    name = next(p.name for p in course_notebooks() if p.name.startswith(number))
    ok = process.returncode == 0
    return {
        "notebook": name,
        "ok": ok,
        "minutes": round(minutes, 1),
        "peak_rss_mb": round(peak),
    } | ({} if ok else {"error": "".join(lines[-5:])})


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
    parser.add_argument("what", choices=["notebooks", "costs"])
    parser.add_argument("numbers", nargs="*", help="notebook numbers (default: all)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--summaries", type=int, default=16)
    args = parser.parse_args(argv)
    if args.what == "costs":
        records = [method_costs(m, args.steps, args.summaries) | context() for m in models.METHODS]
        columns = ["method", "seconds_per_step", "tokens_per_second", "seconds_per_summary"]
        write("cpu_costs", records, [*columns, "peak_rss_mb", "loss_first_last"])
        return
    numbers = args.numbers or [p.name[:2] for p in course_notebooks()]
    old = RESULTS / "cpu_notebooks.json"
    kept = {r["notebook"][:2]: r for r in json.loads(old.read_text())} if old.is_file() else {}
    for number in numbers:
        print(f"{number} ...", flush=True)
        kept[number] = run_notebook(number) | context()
        print(
            f"   {kept[number]['minutes']} min, peak {kept[number]['peak_rss_mb']} MB", flush=True
        )
    records = [kept[n] for n in sorted(kept)]
    write("cpu_notebooks", records, ["notebook", "ok", "minutes", "peak_rss_mb", "threads"])
    total = sum(r["minutes"] for r in records)
    print(f"{len(records)} notebooks, {total:.0f} minutes in all")


if __name__ == "__main__":
    main()
