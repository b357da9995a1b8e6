"""Training speed and memory: tutorlib's fast settings against the documents' own, one JSON record per run.

Usage:
    python benchmarks/train_speed.py --arch distilgpt2 --size stand-in          # CPU, about two minutes
    python benchmarks/train_speed.py --arch llama-2-7b --size real --steps 20   # GPU, random weights
    options: --methods full lora lora-8bit qlora  --settings document tutorlib packed  --steps N  --out FILE

`stand-in` trains tutorlib.tiny's two-layer model; `real` builds the real architecture from its config with
random weights (no download; written once under the tutorlib cache), so speed and memory are the real
model's even though the loss means nothing. Both use the stand-in tokenizer. Each configuration trains
`--steps` optimizer steps on the bundled TWEETSUMM sample (75 dialogues, reused to the document's 2629
rows) under the `full` profile's batch size and sequence length, measures real (non-padding) tokens per
second after two warm-up steps, and EXTRAPOLATES seconds per epoch of 2629 examples from it. Peak memory
is torch's CUDA peak on a GPU and process RSS on CPU (`memory_kind`); `memory.estimate()` sits beside it.
Settings: `document` (fast=False), `tutorlib` (fast=True), `packed` (fast=True plus packing=True).
Records go to benchmarks/results/<arch>-<size>-<device>.json (a list; a rerun replaces its own entries).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from datasets import concatenate_datasets
from transformers import AutoModelForCausalLM, TrainerCallback

from tutorlib import data, memory, paths, profile, templates, tiny, train

ARCHS = {"distilgpt2": "distilgpt2", "llama-2-7b": "meta-llama/Llama-2-7b-hf"}
EPOCH_EXAMPLES = 2629  # TWEETSUMM's training rows in document 000
WARMUP = 2
RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("document", "tutorlib", "packed")  # packed = tutorlib + packing=True (padding-free batches)
SUMMARY = ("method", "settings", "ok", "tokens_per_s", "seconds_per_epoch_extrapolated", "peak_memory_mb")


class StepTimer(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (after the GPU has finished it)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def model_folder(arch: str, size: str, device: str) -> Path:
    """The stand-in folder, or a folder built once: real config, random weights, stand-in tokenizer."""
    if size == "stand-in":
        return tiny.build(arch)
    folder = paths.cache_dir() / "bench" / f"{arch}-real"
    if not (folder / "config.json").is_file():
        config = memory.ARCHITECTURES[ARCHS[arch]].config()
        with torch.device(device):  # initialising 7B weights on the GPU takes seconds, not minutes
            model = AutoModelForCausalLM.from_config(
                config, dtype=torch.bfloat16 if device == "cuda" else None
            )
        model.save_pretrained(folder)
        tiny.tokenizer(profile.family(arch)).save_pretrained(folder)
        del model
    return folder


def run(arch: str, size: str, method: str, setting: str, steps: int) -> dict:
    hub_id = ARCHS[arch]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = model_folder(arch, size, device)
    prof = profile.detect("full", model_overrides={hub_id: str(folder)})
    rows = data.load("tweetsumm", source=paths.data_dir() / "tweetsumm")["train"]
    rows = concatenate_datasets([rows] * (EPOCH_EXAMPLES // len(rows) + 1)).select(range(EPOCH_EXAMPLES))
    timer = StepTimer()
    kwargs = {"method": method, "template": "tweetsumm", "profile": prof, "fast": setting != "document"}
    kwargs |= {"packing": setting == "packed", "max_steps": steps, "logging_steps": 1, "save_strategy": "no"}
    with tempfile.TemporaryDirectory() as out:
        kwargs |= {"output_dir": out, "callbacks": [timer]}
        outcome = memory.attempt(
            lambda: train.finetune(arch, rows, **kwargs), label=f"{arch} {method} {setting}"
        )
    record = {
        "arch": arch,
        "size": size,
        "method": method,
        "settings": setting,
        "device": prof.gpu_name or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "profile_card": prof.card(),
        "library_versions": profile.library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ok": outcome.ok,
        "error": outcome.error,
        "peak_memory_mb": round(outcome.peak_mb, 1),
        "peak_above_start_mb": round(outcome.peak_mb - outcome.baseline_mb, 1),  # model loading included
        "memory_kind": outcome.kind,
    }
    result = outcome.result
    if result is None:
        return record
    cfg = result.settings
    tok = result.tokenizer
    tmpl = templates.TEMPLATES["tweetsumm"]
    lengths = [
        min(len(tok(tmpl.text(r["dialogue"], r["summary"]))["input_ids"]) + 1, cfg["max_length"])
        for r in rows.select(range(75))
    ]
    seen = {h["step"]: h["num_tokens"] for h in result.history if "num_tokens" in h}
    w = min(WARMUP, steps - 1)
    tokens_per_s = (seen[steps] - seen[w]) / (timer.times[steps - 1] - timer.times[w - 1])
    lora = cfg.get("lora") or {}
    quant = cfg.get("quantization") or {}
    estimate = memory.estimate(
        hub_id if size == "real" else str(folder),
        method=method,
        dtype=cfg["model_init_kwargs"]["dtype"],
        batch_size=cfg["per_device_train_batch_size"],
        seq_len=cfg["max_length"] if cfg["packing"] else max(lengths),
        optimizer=cfg["optim"],
        lora_r=lora.get("r") or 16,
        lora_targets=lora.get("target_modules") or "default",
        activation_checkpointing=cfg["activation_checkpointing"],
        fused_attention=cfg["model_init_kwargs"]["attn_implementation"] == "sdpa",
        double_quant=bool(quant.get("bnb_4bit_use_double_quant")),
        kbit_upcast=method in train.QUANTIZED,
    )
    record.update(
        dtype=cfg["model_init_kwargs"]["dtype"],
        compute="bf16" if cfg["bf16"] else "fp16" if cfg["fp16"] else "fp32",
        steps=steps,
        tokens_per_s=round(tokens_per_s, 1),
        mean_tokens_per_example=round(statistics.mean(lengths), 1),
        seconds_per_epoch_extrapolated=round(EPOCH_EXAMPLES * statistics.mean(lengths) / tokens_per_s, 1),
        train_seconds=round(result.seconds, 2),
        estimate_gb=round(estimate.total_gb, 3),
        estimate_breakdown_gb={k: round(v, 3) for k, v in estimate.breakdown.items()},
        trainable_params=result.trainable_params,
        total_params=result.total_params,
        initial_loss=result.initial_loss,
        final_loss=result.final_loss,
        train_settings={k: cfg[k] for k in ("packing", "optim", "activation_checkpointing", "max_length")}
        | {
            "batch_size": cfg["per_device_train_batch_size"],
            "attn": cfg["model_init_kwargs"]["attn_implementation"],
        },
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="distilgpt2")
    parser.add_argument("--size", choices=("stand-in", "real"), default="stand-in")
    parser.add_argument("--methods", nargs="+", choices=train.METHODS, default=list(train.METHODS))
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<arch>-<size>-<device>.json")
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must be more than the {WARMUP} warm-up steps")
    device = torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "cpu"
    out = args.out or RESULTS / f"{args.arch}-{args.size}-{device}.json"
    records = json.loads(out.read_text()) if out.is_file() else []
    for method in args.methods:
        for setting in args.settings:
            record = run(args.arch, args.size, method, setting, args.steps)
            keep = (record["method"], record["settings"])
            records = [r for r in records if (r["method"], r["settings"]) != keep] + [record]
            print(json.dumps({k: record.get(k) for k in SUMMARY}))
            memory.free()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main()
