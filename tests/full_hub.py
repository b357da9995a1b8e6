"""A local Hugging Face cache holding the course's real hub ids, so that `full` runs offline (`make full-check`).

    python tests/full_hub.py HF_HOME [--models distilgpt2 llama-2-7b ...] [--no-datasets]

Models (`tutorlib.models.MODELS`, under their hub ids): the real config with random weights, stored in
the dtype of the hub checkpoint. DistilGPT2 and FLAN-T5-base are at their real size; Llama-2-7B,
Falcon-7B and Phi-2 keep everything but their depth: 2 of 32 layers (`LAYERS`). The tokenizer is the
stand-in's from `tutorlib.tiny` (a BPE trained on data/ with the family's real special tokens), so the
config's special-token ids point into it, and the model's real vocabulary is larger than the tokenizer's,
as Phi-2's and FLAN-T5's already are on the hub.

Datasets (`tutorlib.data.HUB_IDS`): each hub copy's files in its own format, filled from the samples in
data/: DialogSum as train/validation/test.csv (id, dialogue, summary, topic; test: one row per reference);
SAMSum as the same three CSVs (id, dialogue, summary); TWEETSUMM as push_to_hub parquet shards for the
splits train/val/test with `conversation` ([{role: customer|agent, content}]), `abstractive_summary`
(one per conversation, the publisher's choice: the second if present) and `conversation_id`.
Offline, datasets 5 never reads the hub snapshot: it reads the Arrow cache an earlier online
`load_dataset(hub_id)` left in <HF_HOME>/datasets/<owner>___<name>/. That cache is prepared here from the
snapshot with the builder an online load picks (csv or parquet).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import transformers
from transformers import AutoTokenizer

from tutorlib import data, models, paths, tiny

LAYERS = {
    "llama-2-7b": 2,
    "falcon-7b": 2,
    "phi-2": 2,
}  # of 32; the other models are built at full depth
# The dtype each hub checkpoint is stored in: transformers 5 loads in it unless a notebook says otherwise.
DTYPES = {
    "distilgpt2": torch.float32,
    "llama-2-7b": torch.float16,
    "falcon-7b": torch.bfloat16,
    "phi-2": torch.float16,
    "flan-t5-base": torch.float32,
}
TWEETSUMM_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # hub split: sample file
_TWEETSUMM_CARD = """---
configs:
- config_name: default
  data_files:
{}
---
"""


def commit(repo_id: str) -> str:
    """A fixed 40-hex revision per repository, as a hub commit hash looks."""
    return hashlib.sha1(f"full-hub:{repo_id}".encode()).hexdigest()


def snapshot(hf_home: Path, kind: str, repo_id: str) -> Path:
    """`<HF_HOME>/hub/<kind>s--owner--name/snapshots/<commit>`, with refs/main naming that commit."""
    repo = Path(hf_home) / "hub" / f"{kind}s--{repo_id.replace('/', '--')}"
    folder = repo / "snapshots" / commit(repo_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit(repo_id))
    return folder


def build_model(hf_home: Path, name: str) -> Path:
    """The model's hub repository: real config (fewer layers where `LAYERS` says), random weights, stand-in tokenizer."""
    spec = models.spec(name)
    stand_in = tiny.build(spec.name)
    folder = snapshot(hf_home, "model", spec.hub_id)
    for f in stand_in.iterdir():  # the tokenizer files only; the stand-in's own model stays behind
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, folder / f.name)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if "bos_token_id" in spec.config:  # Falcon's tokenizer has no bos: its config's is the eos
        ids["bos_token_id"] = tok.eos_token_id if tok.bos_token_id is None else tok.bos_token_id
    depth = {"num_hidden_layers": LAYERS[spec.name]} if spec.name in LAYERS else {}
    config = models.config(spec.name, **depth, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.auto_class(spec.name).from_config(config, dtype=DTYPES[spec.name])
        models.untie_t5_head(model).save_pretrained(folder)
    del model
    return folder


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def hub_rows(name: str) -> dict[str, list[dict[str, Any]]]:
    """{hub split: records} of a dataset's hub copy, made from the bundled samples."""
    root = paths.data_dir() / name
    if name == "tweetsumm":
        out = {}
        for split, sample in TWEETSUMM_SPLITS.items():
            out[split] = []
            for rec in _jsonl(root / f"{sample}.jsonl"):
                turns = rec["dialog"]["turns"]
                summaries = [s for s in rec["summaries"]["abstractive_summaries"] if any(s)]
                chosen = summaries[1] if len(summaries) > 1 else summaries[0]
                out[split].append(
                    {
                        "conversation": [
                            {
                                "role": "agent" if t["is_agent"] else "customer",
                                "content": " ".join(t["sentences"]),
                            }
                            for t in turns
                        ],
                        "abstractive_summary": " ".join(chosen),
                        "conversation_id": rec["dialog"]["dialog_id"],
                    }
                )
        return out
    if name == "samsum":
        files = {"train": "train", "validation": "val", "test": "test"}
        return {
            s: [
                {k: r[k] for k in ("id", "dialogue", "summary")}
                for r in json.loads((root / f"{f}.json").read_text(encoding="utf-8"))
            ]
            for s, f in files.items()
        }
    if name != "dialogsum":
        raise ValueError(f"no hub copy for {name!r}; expected one of {', '.join(data.HUB_IDS)}")

    def plain(r: dict[str, Any], k: str = "") -> dict[str, Any]:
        return {
            "id": r["fname"],
            "dialogue": r["dialogue"],
            "summary": r[f"summary{k}"],
            "topic": r[f"topic{k}"],
        }

    out = {
        s: [plain(r) for r in _jsonl(root / f"dialogsum.{f}.jsonl")]
        for s, f in [("train", "train"), ("validation", "dev")]
    }
    # The hub's test split repeats each dialogue once per reference.
    out["test"] = [
        plain(r, k) | {"id": f"{r['fname']}_{k}"}
        for r in _jsonl(root / "dialogsum.test.jsonl")
        for k in (1, 2, 3)
    ]
    return out


def write_dataset(
    hf_home: Path, name: str, rows: dict[str, list[dict[str, Any]]] | None = None
) -> Path:
    """The hub snapshot of a dataset in its hub format, then the Arrow cache an online load leaves."""
    hub_id, rows = data.HUB_IDS[name], rows or hub_rows(name)
    folder = snapshot(hf_home, "dataset", hub_id)
    if (
        name == "tweetsumm"
    ):  # as push_to_hub writes it: a parquet shard per split in data/, listed in README
        (folder / "data").mkdir()
        for split, records in rows.items():
            pq.write_table(
                pa.Table.from_pylist(records), folder / "data" / f"{split}-00000-of-00001.parquet"
            )
        listed = "\n".join(f"  - split: {s}\n    path: data/{s}-*" for s in rows)
        (folder / "README.md").write_text(_TWEETSUMM_CARD.format(listed))
    else:
        for split, records in rows.items():
            with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
    _prepare(Path(hf_home) / "datasets", hub_id, folder)
    return folder


def _prepare(cache: Path, hub_id: str, folder: Path) -> None:
    """What an online `load_dataset(hub_id)` writes to the datasets cache, built from the local snapshot."""
    from datasets.load import dataset_module_factory, get_dataset_builder_class

    owner, dataset = hub_id.split("/")
    target = cache / f"{owner}___{dataset}"
    shutil.rmtree(target, ignore_errors=True)
    module = dataset_module_factory(
        str(folder)
    )  # csv or parquet, splits from file names or the card
    kwargs = {k: v for k, v in module.builder_kwargs.items() if k != "dataset_name"}
    builder = get_dataset_builder_class(module, dataset_name=dataset)(
        cache_dir=str(cache), dataset_name=dataset, hash=commit(hub_id), **kwargs
    )
    builder.download_and_prepare()
    # A hub load keeps the owner in the folder name (the builder files and dataset_info are the same).
    Path(builder.cache_dir).parents[2].rename(target)


def build(
    hf_home: Path, names: list[str] | tuple[str, ...] = tuple(models.MODELS), datasets: bool = True
) -> None:
    """The models `names` and (unless `datasets` is False) every hub dataset, under `hf_home`."""
    for name in names:
        start = time.perf_counter()
        build_model(Path(hf_home), name)
        print(
            f"full_hub: {models.spec(name).hub_id} in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    for name in data.HUB_IDS if datasets else ():
        write_dataset(Path(hf_home), name)
        print(f"full_hub: {data.HUB_IDS[name]} ({name})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "hf_home", type=Path, help="the HF_HOME to fill (its hub/ and datasets/ folders)"
    )
    parser.add_argument(
        "--models", nargs="*", default=list(models.MODELS), choices=list(models.MODELS)
    )
    parser.add_argument("--no-datasets", action="store_true", help="models only")
    args = parser.parse_args(argv)
    os.environ.setdefault("TUTORLIB_PROFILE", "smoke")  # tiny.build needs no hub
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    build(args.hf_home, args.models, datasets=not args.no_datasets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
