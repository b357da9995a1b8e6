"""Can the `smoke` stand-ins tell notebooks 01-03's story? Measured miniatures, not the course's.

Usage:
    .venv/bin/python benchmarks/smoke_miniature.py  # every variant, about 40 minutes, one core
    options: --variants today-full probe-init-0.2  --out FILE     # the others' records are kept

Under `smoke`, notebooks 01-03 fine-tune 2-layer, 64-wide stand-ins (random weights,
`tutorlib.tiny`) for 30 steps and generate 24 tokens; every score is 0. Each variant below changes
one or more of:
- `pretrain`: next-token steps on the bundled train splits before fine-tuning: every dialogue, plus
  the DialogSum and SAMSum summaries (never TWEETSUMM's, the task fine-tuned here), in 128-token
  blocks, batch 8, lr 3e-3 decaying linearly to 0. A stand-in for pre-training, meant to give
  fine-tuning something to adapt; on these ~30,000 tokens the base memorizes more than it
  generalizes;
- `task_summaries`: pre-train on TWEETSUMM's own train summaries too. Not a miniature anyone should
  ship (it leaks the task into the base); an upper bound on what a base that knows the task's
  language gives an adapter;
- `synthetic`: pre-train on the summaries of that many offline synthetic pairs too
  (`synthetic.template_pair`, notebook 11's stand-in generator): TWEETSUMM-style English that is not
  TWEETSUMM's, the kind of text a real base model has read;
- `sizes`: layers and width over the registry's 2 x 64 (4 x 256 here);
- `init`: the stand-in's `initializer_range` (the real configs' 0.02 is calibrated for 768+ wide
  layers; at width 64 it leaves the output head's rows about 3.5 times shorter than DistilGPT2's);
- `steps`, `lr`: the SFTConfig's `max_steps` and `learning_rate` (smoke: 30 and 2e-3);
- `tokens`: generation's `max_new_tokens` (smoke: 24; a two-sentence TWEETSUMM summary needs ~45).
Each variant fine-tunes with `train.finetune` (the document's settings, the smoke profile, then the
variant's overrides), summarizes the smoke test set (4 conversations) greedily and grades it with
the offline judge (12 points). `probe` variants instead train a LoRA on the first summary token only
and report its loss: whether the frozen output head lets an adapter say one fixed word at all.
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
from typing import Any, NamedTuple
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tutorlib import course, data, env, grading, models, profile, synthetic, tiny, train  # noqa: E402
from tutorlib.templates import TEMPLATES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PRETRAIN = {"batch": 8, "length": 128, "lr": 3e-3, "seed": 0}


class V(NamedTuple):
    """One variant: the stand-in (sizes over the registry's `tiny`, init, pre-training) and the
    fine-tune."""

    model: str
    method: str
    pretrain: int = 0  # next-token steps before fine-tuning (0: today's random stand-in)
    init: float | None = None  # initializer_range (None: the real config's 0.02)
    steps: int = 30
    lr: float = 2e-3
    tokens: int = 24  # max_new_tokens
    base: bool = False  # grade the base too
    sizes: dict | None = None  # e.g. wider and deeper than the registry's 2 x 64
    # pre-train on TWEETSUMM's own summaries too: an upper bound, a leak
    task_summaries: bool = False
    # pre-train on this many TWEETSUMM-style summaries of `synthetic.template_pair` too
    synthetic: int = 0


_WIDE = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4}
VARIANTS: dict[str, V] = {
    "today-full": V("distilgpt2", "full", base=True),
    "today-lora": V("distilgpt2", "lora"),
    "longer-full": V("distilgpt2", "full", steps=200, lr=5e-3),
    "pretrained-full-30": V("distilgpt2", "full", 600, tokens=48, base=True),
    "pretrained-full": V("distilgpt2", "full", 600, steps=60, lr=3e-3, tokens=48),
    "pretrained-lora": V("distilgpt2", "lora", 600, steps=60, lr=1e-2, tokens=48),
    "pretrained-lora-300": V("distilgpt2", "lora", 600, 0.07, 300, 1e-2, 48),
    "pretrained-lora-init-0.2": V("distilgpt2", "lora", 600, 0.2, 60, 1e-2, 48, base=True),
    "llama-pretrained-full": V("llama-2-7b", "full", 600, steps=60, lr=3e-3, tokens=48, base=True),
    "llama-pretrained-qlora": V("llama-2-7b", "qlora", 600, steps=60, lr=1e-2, tokens=48),
    "llama-memorized-lora": V(
        "llama-2-7b", "lora", 2000, 0.1, 60, 1e-2, 48, base=True, task_summaries=True
    ),
    "llama-memorized-full": V("llama-2-7b", "full", 2000, 0.1, 60, 3e-3, 48, task_summaries=True),
    "llama-4x256-lora": V("llama-2-7b", "lora", 400, None, 60, 1e-2, 48, base=True, sizes=_WIDE),
    "llama-4x256-qlora": V("llama-2-7b", "qlora", 400, None, 60, 1e-2, 48, sizes=_WIDE),
    "llama-4x256-full": V("llama-2-7b", "full", 400, None, 60, 1e-3, 48, sizes=_WIDE),
    "llama-4x256-synthetic-lora": V(
        "llama-2-7b", "lora", 400, None, 60, 1e-2, 48, base=True, sizes=_WIDE, synthetic=300
    ),
    "llama-4x256-synthetic-full": V(
        "llama-2-7b", "full", 400, None, 60, 1e-3, 48, sizes=_WIDE, synthetic=300
    ),
    "llama-4x256-memorized-lora": V(
        "llama-2-7b", "lora", 1000, None, 60, 1e-2, 48, base=True, sizes=_WIDE, task_summaries=True
    ),
    "llama-4x256-memorized-full": V(
        "llama-2-7b", "full", 1000, None, 60, 1e-3, 48, sizes=_WIDE, task_summaries=True
    ),
    "probe-init-0.02": V("distilgpt2", "probe", steps=60, lr=5e-3, tokens=0),
    "probe-init-0.07": V("distilgpt2", "probe", init=0.07, steps=60, lr=5e-3, tokens=0),
    "probe-init-0.2": V("distilgpt2", "probe", init=0.2, steps=60, lr=5e-3, tokens=0),
}


@dataclass(frozen=True)
class _Variant(profile.Profile):
    """The smoke profile, loading one prepared stand-in folder, generating `new_tokens` tokens."""

    folder: str = ""
    new_tokens: int = 24

    def checkpoint(self, name: str) -> str:
        return self.folder

    def generation_args(self) -> dict[str, int]:
        return {"max_new_tokens": self.new_tokens, "batch_size": 4}


def stand_in(v: V, work: Path) -> str:
    """The default stand-in, re-drawn with `v`'s sizes and init and pre-trained when asked; cached
    in `work`."""
    folder, redraw = tiny.build(v.model), v.init is not None or bool(v.sizes)
    if not redraw and not v.pretrain:
        return str(folder)
    sizes = sorted((v.sizes or {}).items())
    out = work / f"{v.model}-{v.init}-{v.pretrain}-{sizes}-{v.task_summaries}-{v.synthetic}"
    if out.is_dir():
        return str(out)
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRETRAIN["seed"])
        if redraw:
            config = AutoConfig.from_pretrained(folder, **(v.sizes or {}))
            config.initializer_range = v.init or config.initializer_range
            model = AutoModelForCausalLM.from_config(config)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder)
        if v.pretrain:
            pretrain(model, tok, v.pretrain, v.task_summaries, v.synthetic)
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def pretrain(
    model: Any, tok: Any, steps: int, task_summaries: bool = False, synthetic_pairs: int = 0
) -> None:
    """Next-token training on every bundled train dialogue and the non-TWEETSUMM summaries (all, if
    asked), and the summaries of the first `synthetic_pairs` offline synthetic pairs."""
    texts = []
    for name in data.DATASETS:
        rows = data.load(name)["train"]
        texts += list(rows["dialogue"])
        texts += list(rows["summary"]) if name != "tweetsumm" or task_summaries else []
    texts += [synthetic.template_pair(i)["summary"] for i in range(synthetic_pairs)]
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
    """The offline judge's points (out of 3 per summary) and summaries of one `Lesson.evaluate`."""
    totals = evaluation.totals
    return {
        "points": totals["total"],
        "of": totals["max_total"],
        **totals["criteria"],
        "summaries": evaluation.summaries,
    }


def probe(folder: str, steps: int, lr: float) -> dict[str, Any]:
    """A LoRA (the document's) trained on one target, the first summary token " Customer": its
    last loss."""
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
    v = VARIANTS[key]
    name, method, steps, lr = v.model, v.method, v.steps, v.lr
    start = time.perf_counter()
    folder = stand_in(v, work)
    config = AutoConfig.from_pretrained(folder)
    out: dict[str, Any] = {
        "variant": key,
        "model": name,
        "method": method,
        "pretrain_steps": v.pretrain,
        "init": v.init,
    }
    out |= {
        "layers": config.num_hidden_layers,
        "width": config.hidden_size,
        "task_summaries": v.task_summaries,
        "synthetic_summaries": v.synthetic,
    }
    out |= {
        "steps": steps,
        "lr": lr,
        "new_tokens": v.tokens,
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    if method == "probe":
        return out | probe(folder, steps, lr)
    variant = _Variant(
        **{f.name: getattr(prof, f.name) for f in fields(prof)}, folder=folder, new_tokens=v.tokens
    )
    # Notebook 01's pipeline: summarize the smoke test set, grade it, record it (in the temporary
    # folder).
    lesson = course.Lesson(
        "smoke_miniature", variant, template="tweetsumm", judge=grading.OfflineJudge()
    )
    tweetsumm = data.load("tweetsumm")
    test = data.take(tweetsumm["test"], variant.examples("test"))
    if v.base:
        model, tok = train.load_model(variant.plan(name))
        out["base"] = points(lesson.evaluate(model, tok, test, f"{key} base"))
    quiet = {"eval_strategy": "no", "disable_tqdm": True, "logging_steps": 5}
    plan = variant.plan(name, method, max_steps=steps, learning_rate=lr, **quiet)
    trained = train.finetune(plan, tweetsumm, template=lesson.template)
    out |= {"train_seconds": round(trained.seconds, 1), "loss_first": round(trained.losses[0], 2)}
    out |= {"loss_last": round(trained.losses[-1], 2), "trainable": trained.trainable_params}
    tuned = lesson.evaluate(trained.model, trained.tokenizer, test, key, trained=trained)
    return out | {"tuned": points(tuned)}


def table(records: list[dict[str, Any]]) -> str:
    head = (
        "| variant | model · method | layers × width | pre-train steps | init | steps · lr "
        "| new tokens | base points | tuned points (2 sentences) "
        "| loss first → last | a tuned summary |"
    )
    lines = [head, "|" + " --- |" * 11]
    for r in records:
        size = f"{r.get('layers', 2)} × {r.get('width', 64)}"
        pre = f"{r['pretrain_steps']}"
        if r.get("task_summaries"):
            pre += " (with TWEETSUMM's summaries)"
        if r.get("synthetic_summaries"):
            pre += f" (with {r['synthetic_summaries']} synthetic summaries)"
        if r["method"] == "probe":
            lines.append(
                f"| {r['variant']} | first-token LoRA probe | {size} | 0 | {r['init'] or 0.02} "
                f"| {r['steps']} · {r['lr']:g} | | | | {r['first_loss']} → {r['last_loss']} | |"
            )
            continue
        base = f"{r['base']['points']} / {r['base']['of']}" if "base" in r else ""
        tuned = r["tuned"]
        shown = tuned["summaries"][0].replace("|", "\\|").replace("\n", " ⏎ ")[:90]
        lines.append(
            f"| {r['variant']} | {r['model']} · {r['method']} | {size} | {pre} "
            f"| {r['init'] or 0.02} | {r['steps']} · {r['lr']:g} | {r['new_tokens']} | {base} "
            f"| {tuned['points']} / {tuned['of']} ({tuned['two_sentences']}) "
            f"| {r['loss_first']} → {r['loss_last']} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS / "smoke_miniature.json")
    args = parser.parse_args(argv)
    prof = profile.detect("smoke")
    libs = env.library_versions()
    context = {
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "dtype": "float32",
        "profile": "smoke",
        "threads": torch.get_num_threads(),
        "library_versions": libs,
    }
    old = {r["variant"]: r for r in json.loads(args.out.read_text())} if args.out.is_file() else {}
    with (
        tempfile.TemporaryDirectory() as work,
        mock.patch.dict(
            os.environ, {"TUTORLIB_RUNS": work, "TUTORLIB_RESULTS": str(Path(work) / "results")}
        ),
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
