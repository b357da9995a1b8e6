"""The course's one model registry, the table in models.toml (ARCHITECTURE.md, "The layers").

`config` is the real architecture (the values of the model's `config.json` on the hub), so
`on_meta(name)` builds the real model on PyTorch's meta device (exact parameter counts, no memory,
no download). A stand-in is the same config with the `tiny` sizes."""

from __future__ import annotations

import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig

# How a model is trained: all its weights, or LoRA adapters on a 16-bit, 8-bit or 4-bit (NF4) base.
METHODS = ("full", "lora", "lora-8bit", "qlora")
QUANTIZED = ("lora-8bit", "qlora")


@dataclass(frozen=True)
class Spec:
    """Everything the course knows about one model (models.toml); `lora`, `training`, `bnb` and
    `lora_training` are the document's own values."""

    name: str
    hub_id: str
    family: str
    document: str
    config: dict[str, Any]
    tiny: dict[str, Any]
    lora: dict[str, Any]
    training: dict[str, Any]
    bnb: dict[str, Any] = field(default_factory=dict)
    lora_training: dict[str, Any] = field(default_factory=dict)  # replaces `training` for adapters
    seq2seq: bool = False
    fp16: bool = True  # False: overflows in fp16, so gets fp32 where a GPU has no bf16


_TABLE = tomllib.loads(resources.files("tutorlib").joinpath("models.toml").read_text("utf-8"))


def _registry(table: dict[str, Any]) -> dict[str, Spec]:
    """The models of the table, their training settings on top of 2023's defaults where used."""
    specs = {}
    for name, entry in table["models"].items():
        fields = {k: v for k, v in entry.items() if k != "trainer_2023"}
        defaults = table["trainer_2023"] if entry["trainer_2023"] else {}
        fields["training"] = {**defaults, **entry["training"]}
        specs[name] = Spec(name=name, **fields)
    return specs


MODELS: dict[str, Spec] = _registry(_TABLE)
_BY_HUB_ID = {s.hub_id: s for s in MODELS.values()} | {"distilgpt2": MODELS["distilgpt2"]}


def spec(name: str) -> Spec:
    """The entry of a registry name (`llama-2-7b`) or a hub id (`meta-llama/Llama-2-7b-hf`)."""
    found = MODELS.get(name) or _BY_HUB_ID.get(name)
    if found is None:
        raise ValueError(
            f"unknown model {name!r}; expected one of: {', '.join(MODELS)} (or their hub ids)"
        )
    return found


def llama_targets(names: list[str]) -> list[str]:
    """LoRA target layers of another architecture as a Llama's layers (models.toml); a name
    that a Llama has already (q_proj, v_proj) stays."""
    equivalents = _TABLE["llama_equivalents"]
    return list(dict.fromkeys(t for name in names for t in equivalents.get(name, [name])))


def config(name: str, **overrides: Any) -> PretrainedConfig:
    """The real architecture as a transformers config, with `overrides` (e.g. fewer layers)."""
    values = {**spec(name).config, **overrides}
    return AutoConfig.for_model(values.pop("model_type"), **values)


def auto_class(name: str) -> type:
    """`AutoModelForSeq2SeqLM` for encoder-decoders (FLAN-T5), `AutoModelForCausalLM` otherwise."""
    return AutoModelForSeq2SeqLM if spec(name).seq2seq else AutoModelForCausalLM


def on_meta(model: str | PretrainedConfig) -> Any:
    """The model on the meta device: each tensor has a shape but no storage, so counting is free."""
    from accelerate import init_empty_weights

    cfg = config(model) if isinstance(model, str) else model
    auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    with init_empty_weights(), plain_falcon_linears(cfg.model_type == "falcon"):
        built = auto.from_config(cfg)
    # init_empty_weights skips tying, which would count a shared embedding twice
    built.tie_weights()
    return untie_t5_head(built)


def untie_t5_head(model: Any) -> Any:
    """Give a T5 built from a FLAN-T5 config its own `lm_head`, as the real checkpoint has.

    transformers 5 always builds T5 with the head tied to the shared embedding and unties it while
    loading a checkpoint that stores both (flan-t5-base does: 247.6M parameters, not 222.9M). A
    config whose `tie_word_embeddings` was False keeps that fact as `scale_decoder_outputs=False`.
    """
    import torch

    if getattr(model.config, "scale_decoder_outputs", True) is not False:
        return model
    model.all_tied_weights_keys.pop("lm_head.weight", None)
    shared = model.shared.weight
    weight = torch.empty_like(shared)
    if shared.device.type != "meta":
        weight.normal_(std=model.config.d_model**-0.5)  # untrained loss starts near log(vocab size)
    model.lm_head.weight = torch.nn.Parameter(weight)
    return model


@contextmanager
def plain_falcon_linears(active: bool):
    """While `active`, build Falcon's four projections as plain nn.Linear (FalconLinear computes the
    same x @ W.T + b), so that a 4- or 8-bit load quantizes them instead of silently keeping them in
    16 bits (ARCHITECTURE.md, "Porting")."""
    import torch
    from transformers.models.falcon import modeling_falcon

    original = modeling_falcon.FalconLinear
    if active:
        modeling_falcon.FalconLinear = torch.nn.Linear
    try:
        yield
    finally:
        modeling_falcon.FalconLinear = original
