"""Tiny offline stand-ins for the course's five models, built locally and cached on disk.

Under the `smoke` profile every notebook loads these instead of the hub checkpoints. Each stand-in uses
the same transformers class as the real model (GPT2LMHeadModel, LlamaForCausalLM, FalconForCausalLM,
PhiForCausalLM, T5ForConditionalGeneration) and keeps the structural choices that change code paths
(module names LoRA targets, multi-query attention, partial rotary embeddings, tied or untied heads,
gated T5 feed-forward), but with hidden size 64, two layers and random weights from a fixed seed. The
tokenizer is a small byte-level BPE trained on the bundled sample data and the prompt templates, wrapped
with the special tokens each real family has. A folder holds config, weights, generation config and
tokenizer, so callers load it with plain `from_pretrained(folder)`. Its name carries a hash of the
training corpus and of the settings below, so new sample data or new settings build a new folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    FalconConfig,
    FalconForCausalLM,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.utils import logging as hf_logging

from tutorlib import paths
from tutorlib.profile import FAMILIES, canonical
from tutorlib.templates import TEMPLATES

log = logging.getLogger(__name__)

# Bump when the way stand-ins are built changes in a way the settings below do not capture.
VERSION = 2
VOCAB_SIZE = 3000  # an upper bound: a small corpus yields fewer merges
SEED = 20231
TINY = {"hidden": 64, "layers": 2, "heads": 4}

# Special tokens in id order (the first ones get ids 0, 1, ...), the roles they play, and what the
# post-processor adds, as in each real family: GPT-2, Falcon and Phi-2 share one <|endoftext|> token and
# have no pad token; Llama-2 prepends <s>; T5 appends </s> and pads with id 0.
_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt2": {
        "specials": ["<|endoftext|>"],
        "roles": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
        "model_max_length": 1024,
    },
    "falcon": {
        "specials": ["<|endoftext|>"],
        "roles": {"eos_token": "<|endoftext|>"},
        "model_max_length": 2048,
    },
    "phi": {
        "specials": ["<|endoftext|>"],
        "roles": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
        "model_max_length": 2048,
    },
    "llama": {
        "specials": ["<unk>", "<s>", "</s>"],
        "roles": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True},
        "model_max_length": 2048,
    },
    "t5": {
        "specials": ["<pad>", "</s>", "<unk>"],
        "roles": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "add_eos_token": True},
        "model_max_length": 512,
    },
}

_H, _L, _A = TINY["hidden"], TINY["layers"], TINY["heads"]
# Config values per family beyond vocabulary and special-token ids; each mirrors the real checkpoint's
# structure at toy size.
_ARCH: dict[str, tuple[type, type, dict[str, Any]]] = {
    # distilgpt2: tied input/output embeddings, Conv1D c_attn/c_proj/c_fc, learned positions.
    "gpt2": (GPT2Config, GPT2LMHeadModel, {"n_embd": _H, "n_layer": _L, "n_head": _A, "n_positions": 1024}),
    # Llama-2-7B: RMSNorm, SwiGLU, rotary, no grouped-query attention, separate lm_head.
    "llama": (
        LlamaConfig,
        LlamaForCausalLM,
        {
            "hidden_size": _H,
            "intermediate_size": 172,
            "num_hidden_layers": _L,
            "num_attention_heads": _A,
            "num_key_value_heads": _A,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
    ),
    # Falcon-7B: one shared key/value head, attention and MLP in parallel, no biases, the old decoder
    # layout (query_key_value, dense, dense_h_to_4h, dense_4h_to_h), rotary rather than ALiBi.
    "falcon": (
        FalconConfig,
        FalconForCausalLM,
        {
            "hidden_size": _H,
            "num_hidden_layers": _L,
            "num_attention_heads": _A,
            "multi_query": True,
            "parallel_attn": True,
            "bias": False,
            "new_decoder_architecture": False,
            "alibi": False,
            "max_position_embeddings": 2048,
        },
    ),
    # Phi-2: rotary on 40 % of each head, q_proj/k_proj/v_proj/dense and fc1/fc2, untied lm_head.
    "phi": (
        PhiConfig,
        PhiForCausalLM,
        {
            "hidden_size": _H,
            "intermediate_size": 4 * _H,
            "num_hidden_layers": _L,
            "num_attention_heads": _A,
            "partial_rotary_factor": 0.4,
            "hidden_act": "gelu_new",
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
        },
    ),
    # flan-t5-base: gated-GELU feed-forward, untied lm_head, relative position buckets.
    "t5": (
        T5Config,
        T5ForConditionalGeneration,
        {
            "d_model": _H,
            "d_kv": _H // _A,
            "d_ff": 2 * _H,
            "num_layers": _L,
            "num_decoder_layers": _L,
            "num_heads": _A,
            "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False,
            "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128,
        },
    ),
}

# Always part of the corpus, so a checkout without sample data still gets a usable tokenizer.
_FALLBACK_DIALOGUE = (
    "Customer: Hi, my parcel was due on Monday and it still has not arrived. Can you check the order?\n"
    "Agent: Sorry to hear that! Please send us a direct message with your order number and we will look.\n"
    "Customer: Done, thanks. I need it before the weekend because it is a birthday present.\n"
    "Agent: Thank you for waiting. The courier has it and it will be delivered tomorrow morning."
)
_FALLBACK_SUMMARY = (
    "Customer is asking about a late parcel that is needed before the weekend. "
    "Agent says the courier will deliver it tomorrow morning."
)
_FALLBACK_TEXT = (
    "Summaries are short. A good summary of a conversation says who wanted what and what happened next, "
    "in plain words and in the order of the events. People chat about trains, flights, phone bills, "
    "broken laptops, birthday parties, dinner plans, exams, jobs and the weather; they ask questions, "
    "answer them, agree, apologise, thank each other and say goodbye. Numbers such as 1, 2, 10, 24, 100 "
    "and 2023 appear, as do dates, times like 8:45, prices like $20 and links that were removed."
)
# Template texts are repeated so their headers and markers become single tokens, as they would in a
# tokenizer that had seen the whole training set.
_TEMPLATE_REPEATS = 20

_built_tokenizers: dict[tuple[str, tuple[str, ...]], str] = {}


def _slug(hub_id: str) -> str:
    return hub_id.split("/")[-1].lower()


def _data_files() -> list[Path]:
    root = paths.data_dir()
    if not root.is_dir():
        return []
    # Hidden folders (.ipynb_checkpoints and the like) hold stale copies, not sample data.
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix in (".json", ".jsonl")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _file_strings(path: Path) -> list[str]:
    """Every string value in a JSON or JSON Lines file; a file that does not parse is skipped with a warning."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        records = (
            [json.loads(line) for line in text.splitlines() if line.strip()]
            if path.suffix == ".jsonl"
            else [json.loads(text)]
        )
    except json.JSONDecodeError as err:
        log.warning("tiny: skipping %s for the tokenizer corpus (not valid JSON: %s)", path, err)
        return []
    return [s for record in records for s in _strings(record)]


def _template_texts() -> list[str]:
    return [t.text(_FALLBACK_DIALOGUE, _FALLBACK_SUMMARY) for t in TEMPLATES.values()]


def _corpus_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for text in (_FALLBACK_TEXT, _FALLBACK_DIALOGUE, _FALLBACK_SUMMARY, *_template_texts()):
        digest.update(text.encode() + b"\0")
    root = paths.data_dir()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _corpus(files: list[Path]) -> list[str]:
    texts = [_FALLBACK_TEXT, _FALLBACK_DIALOGUE, _FALLBACK_SUMMARY]
    texts += _template_texts() * _TEMPLATE_REPEATS
    for path in files:
        texts += _file_strings(path)
    return texts


def _train_bpe(files: list[Path], digest: str, specials: tuple[str, ...]) -> Tokenizer:
    """A byte-level BPE over the corpus; the three families sharing <|endoftext|> train it once per process."""
    key = (digest, specials)
    if key not in _built_tokenizers:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE,
            min_frequency=2,
            special_tokens=list(specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        bpe.train_from_iterator(_corpus(files), trainer)
        _built_tokenizers[key] = bpe.to_str()
    return Tokenizer.from_str(_built_tokenizers[key])


def _make_tokenizer(family_name: str, files: list[Path], digest: str) -> PreTrainedTokenizerFast:
    spec = _TOKENIZERS[family_name]
    bpe = _train_bpe(files, digest, tuple(spec["specials"]))
    # add_bos_token / add_eos_token make transformers install the post-processor that adds them.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        model_max_length=spec["model_max_length"],
        clean_up_tokenization_spaces=False,  # decode must give back exactly what was encoded
        **spec["roles"],
    )


def _make_model(family_name: str, tok: PreTrainedTokenizerFast) -> PreTrainedModel:
    config_cls, model_cls, values = _ARCH[family_name]
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if family_name == "t5":
        ids["decoder_start_token_id"] = tok.pad_token_id  # T5 starts decoding from <pad>
    config = config_cls(vocab_size=len(tok), **values, **ids)
    # A private RNG stream: the same weights every time, and the caller's random state is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_cls(config)
        if family_name == "t5":
            _untie_t5_head(model)
    model.generation_config = GenerationConfig.from_model_config(config)
    return model.eval()


def _untie_t5_head(model: T5ForConditionalGeneration) -> None:
    """Give the T5 stand-in its own lm_head, as flan-t5-base has.

    transformers 5 always builds T5 with lm_head tied to the shared embedding (flan-t5's
    `tie_word_embeddings=False` only turns off output rescaling) and unties it at load time when the
    checkpoint holds both weights with different values, logging a warning, which real flan-t5-base
    checkpoints also trigger. The head is drawn with std d_model**-0.5 so the untrained loss starts near
    log(vocab size) rather than far above it.
    """
    model.all_tied_weights_keys.pop("lm_head.weight", None)
    weight = torch.empty_like(model.shared.weight).normal_(std=model.config.d_model**-0.5)
    model.lm_head.weight = torch.nn.Parameter(weight)


def _folder_key(family_name: str, digest: str) -> str:
    settings = {
        "version": VERSION,
        "vocab_size": VOCAB_SIZE,
        "seed": SEED,
        "template_repeats": _TEMPLATE_REPEATS,
        "tokenizer": _TOKENIZERS[family_name],
        "arch": [_ARCH[family_name][0].__name__, _ARCH[family_name][2]],
        "corpus": digest,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def build(name: str, cache_dir: Path | None = None) -> Path:
    """The folder of the stand-in for a logical model name or hub id, building it first if it is not cached.

    Unknown names raise the ValueError of `profile.canonical`, which lists the valid ones. The folder is
    `<cache_dir or paths.cache_dir()>/tiny/<model>-<hash>`; it is written to a temporary folder and
    renamed into place, so a concurrent reader sees either nothing or the complete folder.
    """
    hub_id = canonical(name)
    family_name = FAMILIES[hub_id]
    files = _data_files()
    digest = _corpus_digest(files)
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    folder = root / "tiny" / f"{_slug(hub_id)}-{_folder_key(family_name, digest)}"
    if folder.is_dir():
        return folder

    log.info(
        "tiny: building the stand-in for %s (%s) from %d data files in %s",
        hub_id,
        family_name,
        len(files),
        folder,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tok = _make_tokenizer(family_name, files, digest)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Writing model shards" bar per build is noise in a notebook
        try:
            _make_model(family_name, tok).save_pretrained(staging)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        tok.save_pretrained(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise
            # Another process finished the same build first; its folder is identical.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_all(cache_dir: Path | None = None) -> dict[str, Path]:
    """Build (or find in the cache) all five stand-ins; returns hub id -> folder."""
    return {hub_id: build(hub_id, cache_dir) for hub_id in FAMILIES}


def tokenizer(family: str) -> PreTrainedTokenizerFast:
    """The stand-in tokenizer of an architecture family (`gpt2`, `llama`, `falcon`, `phi`, `t5`).

    It is loaded fresh from the family's cached stand-in folder each call, so a caller that sets
    `pad_token` changes only its own copy.
    """
    hub_ids = {fam: hub_id for hub_id, fam in FAMILIES.items()}
    if family not in hub_ids:
        raise ValueError(f"unknown model family {family!r}; expected one of: {', '.join(sorted(hub_ids))}")
    return PreTrainedTokenizerFast.from_pretrained(build(hub_ids[family]))
