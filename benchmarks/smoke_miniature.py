"""Can the `smoke` stand-ins tell notebooks 01-03's story? Measured variants of the miniature, not the course's.

Usage:
    .venv/bin/python benchmarks/smoke_miniature.py                 # every variant, about 12 minutes, one core
    options: --variants today-full probe-init-0.2  --out FILE

Under `smoke`, notebooks 01-03 fine-tune 2-layer, 64-wide stand-ins (random weights, `tutorlib.tiny`)
for 30 steps and generate 24 tokens; every score is 0. Each variant below changes one or more of:
- `pretrain`: next-token steps on the bundled train splits before fine-tuning: every dialogue, plus
  the DialogSum and SAMSum summaries (never TWEETSUMM's, the task fine-tuned here), in 128-token
  blocks, batch 8, lr 3e-3 decaying linearly to 0. A stand-in for pre-training: the base then writes
  English, and fine-tuning has something to adapt;
- `init`: the stand-in's `initializer_range` (the real configs' 0.02 is calibrated for 768+ wide
  layers; at width 64 it leaves the output head's rows about 3.5 times shorter than DistilGPT2's);
- `steps`, `lr`: the SFTConfig's `max_steps` and `learning_rate` (smoke: 30 and 2e-3);
- `tokens`: `max_new_tokens` when generating (smoke: 24; a two-sentence TWEETSUMM summary needs ~45).
Each variant fine-tunes with `train.finetune` (the document's settings, the smoke profile, then the
variant's overrides), summarizes the smoke test set (4 conversations) greedily and grades it with the
offline judge (12 points). `probe` variants instead train a LoRA on the first summary token only and
report its loss: whether the frozen output head lets an adapter say one fixed word at all.
Records: benchmarks/results/smoke_miniature.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tutorlib import course, data, grading, models, profile, tiny, train  # noqa: E402
from tutorlib.templates import TEMPLATES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PRETRAIN = {"batch": 8, "length": 128, "lr": 3e-3, "seed": 0}
# name: (model, method, pretrain steps, initializer_range or None, steps, lr, new tokens, grade the base)
VARIANTS: dict[str, tuple] = {
    "today-full": ("distilgpt2", "full", 0, None, 30, 2e-3, 24, True),
    "today-lora": ("distilgpt2", "lora", 0, None, 30, 2e-3, 24, False),
    "longer-full": ("distilgpt2", "full", 0, None, 200, 5e-3, 24, False),
    "pretrained-full-30": ("distilgpt2", "full", 600, None, 30, 2e-3, 48, True),
    "pretrained-full": ("distilgpt2", "full", 600, None, 60, 3e-3, 48, False),
    "pretrained-lora": ("distilgpt2", "lora", 600, None, 60, 1e-2, 48, False),
    "pretrained-lora-300": ("distilgpt2", "lora", 600, 0.07, 300, 1e-2, 48, False),
    "pretrained-lora-init-0.2": ("distilgpt2", "lora", 600, 0.2, 60, 1e-2, 48, True),
    "llama-pretrained-full": ("llama-2-7b", "full", 600, None, 60, 3e-3, 48, True),
    "llama-pretrained-qlora": ("llama-2-7b", "qlora", 600, None, 60, 1e-2, 48, False),
    "probe-init-0.02": ("distilgpt2", "probe", 0, None, 60, 5e-3, 0, False),
    "probe-init-0.07": ("distilgpt2", "probe", 0, 0.07, 60, 5e-3, 0, False),
    "probe-init-0.2": ("distilgpt2", "probe", 0, 0.2, 60, 5e-3, 0, False),
}


@dataclass(frozen=True)
class _Variant(profile.Profile):
    """The smoke profile, loading one prepared stand-in folder and generating `new_tokens` tokens."""

    folder: str = ""
    new_tokens: int = 24

    def model(self, name: str) -> str:
        return self.folder

    def generation_args(self) -> dict[str, int]:
        return {"max_new_tokens": self.new_tokens, "batch_size": 4}


def stand_in(name: str, init: float | None, steps: int, work: Path) -> str:
    """The default stand-in, re-drawn with `init` and pre-trained for `steps` when asked; cached in `work`."""
    folder = tiny.build(name)
    if init is None and not steps:
        return str(folder)
    out = work / f"{name}-{init}-{steps}"
    if out.is_dir():
        return str(out)
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRETRAIN["seed"])
        if init is None:
            model = AutoModelForCausalLM.from_pretrained(folder)
        else:
            config = AutoConfig.from_pretrained(folder)
            config.initializer_range = init
            model = AutoModelForCausalLM.from_config(config)
        if steps:
            pretrain(model, tok, steps)
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def pretrain(model: Any, tok: Any, steps: int) -> None:
    """Next-token training on every bundled train dialogue and the non-TWEETSUMM summaries."""
    texts = []
    for name in data.DATASETS:
        rows = data.load(name)["train"]
        texts += list(rows["dialogue"]) + ([] if name == "tweetsumm" else list(rows["summary"]))
    ids = [i for text in texts for i in tok(text).input_ids + [tok.eos_token_id]]
    length = PRETRAIN["length"]
    blocks = torch.tensor(ids[: len(ids) // length * length]).view(-1, length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"])
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(steps):
        rows = blocks[torch.randint(len(blocks), (PRETRAIN["batch"],))]
        model(input_ids=rows, labels=rows).loss.backward()
        optimizer.step()
        decay.step()
        optimizer.zero_grad()


def points(evaluation: course.Evaluation) -> dict[str, Any]:
    """The offline judge's points (out of 3 per summary) and the summaries of one `Lesson.evaluate`."""
    totals = evaluation.totals
    return {"points": totals["total"], "of": totals["max_total"], **totals["criteria"], "summaries": evaluation.summaries}


def probe(folder: str, steps: int, lr: float) -> dict[str, Any]:
    """A LoRA (the document's) trained on one target, the first summary token " Customer": its last loss."""
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    rows, template = data.load("tweetsumm")["train"], TEMPLATES["tweetsumm"]
    prompts = [tok(template.prompt(d)).input_ids[-200:] for d in rows["dialogue"]]
    target = tok(" Customer", add_special_tokens=False).input_ids[-1]
    model = get_peft_model(model, LoraConfig(**models.spec("distilgpt2").lora))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRETRAIN["seed"])
        for _ in range(steps):
            batch = [prompts[i] for i in torch.randint(len(prompts), (4,)).tolist()]
            logits = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in batch])
            loss = torch.nn.functional.cross_entropy(logits, torch.full((len(batch),), target))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return {"first_loss": round(losses[0], 3), "last_loss": round(sum(losses[-5:]) / 5, 3)}


def run(key: str, prof: Any, work: Path) -> dict[str, Any]:
    name, method, pre, init, steps, lr, tokens, base = VARIANTS[key]
    start = time.perf_counter()
    folder = stand_in(name, init, pre, work)
    out: dict[str, Any] = {"variant": key, "model": name, "method": method, "pretrain_steps": pre, "init": init}
    out |= {"steps": steps, "lr": lr, "new_tokens": tokens, "build_seconds": round(time.perf_counter() - start, 1)}
    if method == "probe":
        return out | probe(folder, steps, lr)
    variant = _Variant(**{f.name: getattr(prof, f.name) for f in fields(prof)}, folder=folder, new_tokens=tokens)
    # Notebook 01's pipeline: summarize the smoke test set, grade it, record it (in the temporary folder).
    lesson = course.Lesson("smoke_miniature", variant, template="tweetsumm", judge=grading.OfflineJudge())
    tweetsumm = data.load("tweetsumm")
    test = data.take(tweetsumm["test"], variant.examples("test"))
    if base:
        model, tok = train.load_model(name, variant, method="full")
        out["base"] = points(lesson.evaluate(model, tok, test, f"{key} base"))
    trained = train.finetune(name, tweetsumm, method=method, template=lesson.template, profile=variant,
                             max_steps=steps, learning_rate=lr, eval_strategy="no", disable_tqdm=True, logging_steps=5)
    out |= {"train_seconds": round(trained.seconds, 1), "loss_first": round(trained.losses[0], 2)}
    out |= {"loss_last": round(trained.losses[-1], 2), "trainable": trained.trainable_params}
    return out | {"tuned": points(lesson.evaluate(trained.model, trained.tokenizer, test, key, trained=trained))}


def table(records: list[dict[str, Any]]) -> str:
    head = "| variant | model · method | pre-train steps | init | steps · lr | new tokens | base points | tuned points (2 sentences) | loss first → last | a tuned summary |"
    lines = [head, "|" + " --- |" * 10]
    for r in records:
        if r["method"] == "probe":
            lines.append(f"| {r['variant']} | first-token LoRA probe | 0 | {r['init'] or 0.02} | {r['steps']} · {r['lr']:g} "
                         f"| | | | {r['first_loss']} → {r['last_loss']} | |")
            continue
        base = f"{r['base']['points']} / {r['base']['of']}" if "base" in r else ""
        tuned = r["tuned"]
        shown = tuned["summaries"][0].replace("|", "\\|").replace("\n", " ⏎ ")[:90]
        lines.append(
            f"| {r['variant']} | {r['model']} · {r['method']} | {r['pretrain_steps']} | {r['init'] or 0.02} "
            f"| {r['steps']} · {r['lr']:g} | {r['new_tokens']} | {base} | {tuned['points']} / {tuned['of']} "
            f"({tuned['two_sentences']}) | {r['loss_first']} → {r['loss_last']} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS / "smoke_miniature.json")
    args = parser.parse_args(argv)
    prof = profile.detect("smoke")
    libs = profile.library_versions()
    context = {"device": f"cpu ({platform.processor() or platform.machine()})", "dtype": "float32",
               "profile": "smoke", "threads": torch.get_num_threads(), "library_versions": libs}
    old = {r["variant"]: r for r in json.loads(args.out.read_text())} if args.out.is_file() else {}
    with tempfile.TemporaryDirectory() as work, mock.patch.dict(
        os.environ, {"TUTORLIB_RUNS": work, "TUTORLIB_RESULTS": str(Path(work) / "results")}
    ):
        for key in args.variants:
            print(f"{key} ...", flush=True)
            old[key] = run(key, prof, Path(work)) | context
            old[key]["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    records = [old[k] for k in VARIANTS if k in old]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    args.out.with_suffix(".md").write_text(table(records))
    print(table(records))


if __name__ == "__main__":
    main()
