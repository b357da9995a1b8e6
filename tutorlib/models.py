"""The one registry of the course's models: hub id, architecture, stand-in size, each document's settings.

`profile`, `tiny`, `memory` and `train` all read this table, so what the course knows about a model
lives in one place. `config` is the real architecture (the values of the model's `config.json` on the
hub), so `on_meta(name)` builds the real model on PyTorch's meta device (exact parameter counts, no
memory, no download). A stand-in is the same config with the sizes in `tiny` replaced.
`training` is the document's trainer settings under today's names (ARCHITECTURE.md, "Porting"); values
a 2023 trainer took by default are written out, because today's defaults differ.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig

# How a model is trained: all its weights, or LoRA adapters on a 16-bit, 8-bit or 4-bit (NF4) base.
METHODS = ("full", "lora", "lora-8bit", "qlora")
QUANTIZED = ("lora-8bit", "qlora")

# 2023 TrainingArguments/SFTTrainer defaults the documents relied on (today: bf16, lr 2e-5, checkpointing).
_TRAINER_2023 = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 8,
    "optim": "adamw_torch",
    "lr_scheduler_type": "linear",
    "bf16": False,
    "fp16": False,
    "activation_checkpointing": False,
    "max_length": 1024,
}
_TWEETSUMM = {**_TRAINER_2023, "learning_rate": 2e-4, "weight_decay": 0.01, "num_train_epochs": 5}
# Document 000 uses one LoRA and one 4-bit setting for both of its models. It names no target layers,
# so peft's default per architecture applies (GPT-2: the fused attention c_attn; Llama: q_proj, v_proj).
_LORA_000 = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "bias": "none",
    "task_type": "CAUSAL_LM",
}
_NF4_000 = {
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": False,
    "bnb_4bit_compute_dtype": "bfloat16",
}


@dataclass(frozen=True)
class Spec:
    """Everything the course knows about one model; `lora`/`training`/`bnb` are the document's own values."""

    name: str
    hub_id: str
    family: str
    document: str
    config: dict[str, Any]
    tiny: dict[str, Any]
    lora: dict[str, Any]
    training: dict[str, Any]
    bnb: dict[str, Any] = field(default_factory=dict)
    lora_training: dict[str, Any] = field(
        default_factory=dict
    )  # replaces `training` values for adapters
    seq2seq: bool = False
    fp16: bool = (
        True  # False: the model overflows in fp16 and falls back to fp32 where bf16 is missing
    )


MODELS: dict[str, Spec] = {
    "distilgpt2": Spec(
        "distilgpt2",
        "distilbert/distilgpt2",
        "gpt2",
        "000",
        config={
            "model_type": "gpt2",
            "n_embd": 768,
            "n_layer": 6,
            "n_head": 12,
            "vocab_size": 50257,
            "n_positions": 1024,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        },
        tiny={"n_embd": 64, "n_layer": 2, "n_head": 4},
        lora=_LORA_000,
        training=_TWEETSUMM,
        bnb=_NF4_000,
    ),
    "llama-2-7b": Spec(
        "llama-2-7b",
        "meta-llama/Llama-2-7b-hf",
        "llama",
        "000",
        config={
            "model_type": "llama",
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 32000,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        tiny={
            "hidden_size": 64,
            "intermediate_size": 172,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        },
        lora=_LORA_000,
        training={**_TWEETSUMM, "num_train_epochs": 1},
        bnb=_NF4_000,
    ),
    "falcon-7b": Spec(
        "falcon-7b",
        "tiiuae/falcon-7b",
        "falcon",
        "002",
        # One shared key/value head, attention and MLP in parallel, no biases, rotary positions.
        config={
            "model_type": "falcon",
            "hidden_size": 4544,
            "num_hidden_layers": 32,
            "num_attention_heads": 71,
            "multi_query": True,
            "parallel_attn": True,
            "bias": False,
            "new_decoder_architecture": False,
            "alibi": False,
            "vocab_size": 65024,
            "max_position_embeddings": 2048,
            "bos_token_id": 11,
            "eos_token_id": 11,
        },
        tiny={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        lora={
            "r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.1,
            "bias": "none",
            "task_type": "CAUSAL_LM",
            "target_modules": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        },
        training={
            **_TRAINER_2023,
            "per_device_train_batch_size": 32,
            "gradient_accumulation_steps": 4,
            "optim": "paged_adamw_32bit",
            "learning_rate": 2e-4,
            "fp16": True,
            "max_grad_norm": 0.1,
            "num_train_epochs": 5,
            "warmup_steps": 0.01,
            "lr_scheduler_type": "cosine",
            "train_sampling_strategy": "group_by_length",
            "logging_steps": 20,
            "save_steps": 20,
            "max_length": 512,
        },
        bnb={
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": "float16",
        },
    ),
    "phi-2": Spec(
        "phi-2",
        "microsoft/phi-2",
        "phi",
        "003",
        config={
            "model_type": "phi",
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 51200,
            "partial_rotary_factor": 0.4,
            "hidden_act": "gelu_new",
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        },
        tiny={
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        },
        # 003's 2023 remote-code names (Wqkv, out_proj) match nothing in today's native Phi.
        lora={
            "r": 32,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "bias": "none",
            "task_type": "CAUSAL_LM",
            "target_modules": ["q_proj", "k_proj", "v_proj", "dense"],
        },
        training={
            **_TRAINER_2023,
            "warmup_steps": 1,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 4,
            "max_steps": 1000,
            "learning_rate": 2e-4,
            "optim": "paged_adamw_32bit",
            "logging_steps": 25,
            "save_strategy": "steps",
            "save_steps": 25,
            "eval_strategy": "steps",
            "eval_steps": 25,
            "activation_checkpointing": True,
            "train_sampling_strategy": "group_by_length",
        },
        bnb={
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": False,
            "bnb_4bit_compute_dtype": "float16",
        },
    ),
    "flan-t5-base": Spec(
        "flan-t5-base",
        "google/flan-t5-base",
        "t5",
        "001",
        config={
            "model_type": "t5",
            "d_model": 768,
            "d_kv": 64,
            "d_ff": 2048,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "num_heads": 12,
            "vocab_size": 32128,
            "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False,
            "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "decoder_start_token_id": 0,
        },
        tiny={
            "d_model": 64,
            "d_kv": 16,
            "d_ff": 128,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 4,
        },
        lora={
            "r": 32,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "bias": "none",
            "task_type": "SEQ_2_SEQ_LM",
            "target_modules": ["q", "v"],
        },
        # 001 is a demonstration: one step of each run. Raise max_steps to train for real.
        training={
            "learning_rate": 1e-5,
            "num_train_epochs": 1,
            "weight_decay": 0.01,
            "logging_steps": 1,
            "max_steps": 1,
        },
        lora_training={"learning_rate": 1e-3, "weight_decay": 0.0, "auto_find_batch_size": True},
        seq2seq=True,
        fp16=False,  # T5 was pre-trained in bf16; its activations overflow fp16 (NaN losses)
    ),
}
_BY_HUB_ID = {s.hub_id: s for s in MODELS.values()} | {"distilgpt2": MODELS["distilgpt2"]}


def spec(name: str) -> Spec:
    """The registry entry of a logical name (`llama-2-7b`) or a hub id (`meta-llama/Llama-2-7b-hf`)."""
    found = MODELS.get(name) or _BY_HUB_ID.get(name)
    if found is None:
        raise ValueError(
            f"unknown model {name!r}; expected one of: {', '.join(MODELS)} (or their hub ids)"
        )
    return found


def config(name: str, **overrides: Any) -> PretrainedConfig:
    """The model's real architecture as a transformers config, with `overrides` (e.g. fewer layers)."""
    values = {**spec(name).config, **overrides}
    return AutoConfig.for_model(values.pop("model_type"), **values)


def auto_class(name: str) -> type:
    """`AutoModelForSeq2SeqLM` for encoder-decoders (FLAN-T5), `AutoModelForCausalLM` otherwise."""
    return AutoModelForSeq2SeqLM if spec(name).seq2seq else AutoModelForCausalLM


def on_meta(model: str | PretrainedConfig) -> Any:
    """The model built on the meta device: every tensor has a shape and no storage, so counting is free."""
    from accelerate import init_empty_weights

    cfg = config(model) if isinstance(model, str) else model
    auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    with init_empty_weights(), plain_falcon_linears(cfg.model_type == "falcon"):
        built = auto.from_config(cfg)
    built.tie_weights()  # init_empty_weights skips tying, which would count a shared embedding twice
    return untie_t5_head(built)


def untie_t5_head(model: Any) -> Any:
    """Give a T5 built from a FLAN-T5 config its own `lm_head`, as the real checkpoint has.

    transformers 5 always builds T5 with the head tied to the shared embedding and unties it while
    loading a checkpoint that stores both (flan-t5-base does: 247.6M parameters, not 222.9M). A config
    whose `tie_word_embeddings` was False keeps that fact as `scale_decoder_outputs=False`.
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
    """Build Falcon's projections as plain nn.Linear, so that bitsandbytes can quantize them.

    transformers 5.23 quantizes only modules whose type is exactly nn.Linear; Falcon builds its four
    projections from the subclass FalconLinear (the same x @ W.T + b), so without this a 4- or 8-bit
    load of Falcon silently keeps every layer in 16 bits.
    """
    import torch
    from transformers.models.falcon import modeling_falcon

    original = modeling_falcon.FalconLinear
    if active:
        modeling_falcon.FalconLinear = torch.nn.Linear
    try:
        yield
    finally:
        modeling_falcon.FalconLinear = original
