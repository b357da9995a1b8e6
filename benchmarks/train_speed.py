"""Training speed and memory: modern trainer settings against the documents' own, a record per run.

Usage:
    python benchmarks/train_speed.py --arch distilgpt2 --size stand-in  # CPU, about two minutes
    python benchmarks/train_speed.py --arch llama-2-7b --size real --steps 20  # GPU, random weights
    options: --methods full lora lora-8bit qlora  --settings document tutorlib packed
             --steps N  --out FILE

`stand-in` trains tutorlib.tiny's two-layer model; `real` builds the real architecture from its
config with random weights (no download; written once under the tutorlib cache), so speed and
memory are the real model's even though the loss means nothing. Both use the stand-in tokenizer.
Each configuration runs `train.finetune` for `--steps` optimizer steps on the bundled TWEETSUMM
sample (75 dialogues, reused to the document's 2629 rows) under the `full` profile's batch size and
sequence length, measures real (non-padding) tokens per second after two warm-up steps, and
EXTRAPOLATES seconds per epoch of 2629 examples from it. Peak memory is torch's CUDA peak on a GPU
and process RSS on CPU (`memory_kind`); `memory.estimate()` sits beside it. Settings (SFTConfig
overrides, see `overrides()`): `document` (none: what finetune does by default), `tutorlib`
(today's faster choices), `packed` (tutorlib plus packing=True).
Records: benchmarks/results/<arch>-<size>-<device>.json (a list; a rerun replaces its own entries).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict, concatenate_datasets
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from tutorlib import data, env, memory, models, paths, profile, templates, tiny, train

ARCHS = ("distilgpt2", "llama-2-7b")
EPOCH_EXAMPLES = 2629  # TWEETSUMM's training rows in document 000
WARMUP = 2
RESULTS = Path(__file__).resolve().parent / "results"
# packed = tutorlib + packing=True (padding-free batches)
SETTINGS = ("document", "tutorlib", "packed")
SUMMARY = (
    "method",
    "settings",
    "ok",
    "tokens_per_s",
    "seconds_per_epoch_extrapolated",
    "peak_memory_mb",
)
# ~7B models: activations alone outgrow a 16-24 GB card unless recomputed
LARGE_FAMILIES = ("llama", "falcon")


class StepTimer(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (after the GPU has finished it)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def overrides(arch: str, method: str, setting: str, prof: profile.Profile) -> dict[str, Any]:
    """SFTConfig values over finetune's defaults (document settings + profile): none for
    `document`; for `tutorlib` what the pre-rewrite `fast=True` path added; for `packed` that plus
    trl's packing."""
    if setting == "document":
        return {}
    # paging: GPU only
    quantized_optim = "paged_adamw_8bit" if prof.device == "cuda" else "adamw_bnb_8bit"
    values: dict[str, Any] = {
        "optim": quantized_optim if method in models.QUANTIZED else "adamw_torch_fused",
        "train_sampling_strategy": "group_by_length",  # batches of similar length pad little
        "activation_checkpointing": models.spec(arch).family in LARGE_FAMILIES,
    }
    if prof.dtype == torch.bfloat16:  # Ampere or newer: tf32 matmuls for what still runs in fp32
        values["tf32"] = True
    if setting == "packed":  # packed rows all have the same length: nothing to group
        values |= {"packing": True, "train_sampling_strategy": "random"}
    return values


def model_folder(arch: str, size: str, device: str) -> Path:
    """The stand-in folder, or one built once: real config, random weights, stand-in tokenizer."""
    stand_in = tiny.build(arch)
    if size == "stand-in":
        return stand_in
    # named after the stand-in (its hash): a rebuilt stand-in tokenizer gets a new real folder too
    folder = paths.cache_dir() / "bench" / stand_in.name.replace(arch, f"{arch}-real", 1)
    if not (folder / "tokenizer_config.json").is_file():  # written last
        with torch.device(device):  # initialising 7B weights on the GPU takes seconds, not minutes
            model = AutoModelForCausalLM.from_config(
                models.config(arch), dtype=torch.bfloat16 if device == "cuda" else None
            )
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(stand_in).save_pretrained(folder)
        del model
    return folder


def training_rows() -> DatasetDict:
    """Only a train split: the bundled TWEETSUMM one, repeated to the document's 2629 rows."""
    rows = data.load("tweetsumm", source=paths.data_dir() / "tweetsumm")["train"]
    repeats = EPOCH_EXAMPLES // len(rows) + 1
    rows = concatenate_datasets([rows] * repeats).select(range(EPOCH_EXAMPLES))
    return DatasetDict({"train": rows})


def token_lengths(folder: Path, rows: DatasetDict, max_length: int) -> list[int]:
    """Tokens per training example as trained: template text plus end-of-text, cut at max_length."""
    tok, tmpl = AutoTokenizer.from_pretrained(folder), templates.TEMPLATES["tweetsumm"]
    texts = [
        tmpl.text(d, s)
        for d, s in zip(rows["train"]["dialogue"], rows["train"]["summary"], strict=True)
    ]
    return [min(len(ids) + 1, max_length) for ids in tok(texts)["input_ids"]]


def tracked(fn: Callable[[], train.Run]) -> tuple[train.Run | None, str | None, memory.Usage]:
    """(run, None, usage), or (None, error, usage) when it ran out of memory; usage includes model
    loading."""
    with memory.track() as usage:
        try:
            return fn(), None, usage
        except torch.OutOfMemoryError as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            return None, f"{type(exc).__name__}: {first_line}", usage


def run(arch: str, size: str, method: str, setting: str, steps: int) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = model_folder(arch, size, device)
    prof = replace(profile.detect("full"), model_overrides={models.spec(arch).hub_id: str(folder)})
    rows, timer = training_rows(), StepTimer()
    extra = overrides(arch, method, setting, prof) | {
        "max_steps": steps,
        "logging_steps": 1,
        "save_strategy": "no",
    }
    plan = prof.plan(arch, method, **extra)  # as finetune trains it
    cfg = plan.args
    # prepare_model_for_kbit_training turns checkpointing on for quantized bases, whatever
    # SFTConfig says
    checkpointing = bool(cfg.get("activation_checkpointing")) or method in models.QUANTIZED
    lengths = token_lengths(folder, rows, cfg["max_length"])
    estimate = memory.estimate(
        arch if size == "real" else str(folder),
        method=method,
        dtype=plan.dtype,
        batch_size=cfg["per_device_train_batch_size"],
        seq_len=cfg["max_length"] if cfg.get("packing") else max(lengths),
        optimizer=cfg["optim"],
        lora=plan.lora,
        activation_checkpointing=checkpointing,
    )
    tmpl = templates.TEMPLATES["tweetsumm"]
    result, error, usage = tracked(
        lambda: train.finetune(plan, rows, template=tmpl, callbacks=[timer])
    )
    record = {
        "arch": arch,
        "size": size,
        "method": method,
        "settings": setting,
        "device": prof.gpu_name or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "profile_card": prof.card(),
        "library_versions": env.library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ok": error is None,
        "error": error,
        "peak_memory_mb": round(usage.peak_mb, 1),
        # model loading included
        "peak_above_start_mb": round(usage.peak_mb - usage.baseline_mb, 1),
        "memory_kind": usage.kind,
        "dtype": str(plan.dtype).removeprefix("torch."),
        "compute": "bf16" if cfg["bf16"] else "fp16" if cfg["fp16"] else "fp32",
        "steps": steps,
        "mean_tokens_per_example": round(statistics.mean(lengths), 1),
        "estimate_gb": round(estimate.total_gb, 3),
        "estimate_breakdown_gb": {k: round(v, 3) for k, v in estimate.breakdown.items()},
        "train_settings": {
            "packing": bool(cfg.get("packing")),
            "optim": cfg["optim"],
            "activation_checkpointing": checkpointing,
            "max_length": cfg["max_length"],
            "batch_size": cfg["per_device_train_batch_size"],
            "sampling": cfg.get("train_sampling_strategy", "random"),
            "tf32": cfg.get("tf32"),
        },
    }
    if result is None:
        memory.free()
        return record
    record["train_settings"] |= {
        "activation_checkpointing": bool(
            getattr(result.model, "is_activation_checkpointing", checkpointing)
        ),
        "attn": result.model.config._attn_implementation,
    }
    record |= measured(result, timer, steps, statistics.mean(lengths))
    memory.free(result.model)
    return record


def measured(result: train.Run, timer: StepTimer, steps: int, mean_tokens: float) -> dict[str, Any]:
    """Speed after the warm-up steps, its epoch extrapolation, and what `train.Run` recorded."""
    seen = {h["step"]: h["num_tokens"] for h in result.history if "num_tokens" in h}
    w = min(WARMUP, steps - 1)
    tokens_per_s = (seen[steps] - seen[w]) / (timer.times[steps - 1] - timer.times[w - 1])
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "seconds_per_epoch_extrapolated": round(EPOCH_EXAMPLES * mean_tokens / tokens_per_s, 1),
        "train_seconds": round(result.seconds, 2),
        "train_peak_memory_mb": round(result.peak_memory_mb, 1),
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "initial_loss": result.losses[0] if result.losses else None,
        "final_loss": result.losses[-1] if result.losses else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, default="distilgpt2")
    parser.add_argument("--size", choices=("stand-in", "real"), default="stand-in")
    parser.add_argument(
        "--methods", nargs="+", choices=models.METHODS, default=list(models.METHODS)
    )
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--out", type=Path, help="default: benchmarks/results/<arch>-<size>-<device>.json"
    )
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must be more than the {WARMUP} warm-up steps")
    device = torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "cpu"
    out = args.out or RESULTS / f"{args.arch}-{args.size}-{device}.json"
    records = json.loads(out.read_text()) if out.is_file() else []
    with tempfile.TemporaryDirectory() as runs:
        # finetune's output_dir; nothing of a benchmark run is kept
        os.environ["TUTORLIB_RUNS"] = runs
        for method in args.methods:
            for setting in args.settings:
                record = run(args.arch, args.size, method, setting, args.steps)
                keep = (record["method"], record["settings"])
                records = [r for r in records if (r["method"], r["settings"]) != keep] + [record]
                print(json.dumps({k: record.get(k) for k in SUMMARY}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main()
