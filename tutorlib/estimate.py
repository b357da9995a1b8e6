"""Training memory estimated before loading anything, with the arithmetic shown (`explain()`);
notebooks call it as `memory.estimate`. Sizes in GB are 2**30 bytes."""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, BitsAndBytesConfig, PretrainedConfig
from transformers.integrations import replace_with_bnb_linear
from transformers.pytorch_utils import Conv1D
from transformers.quantizers.base import HfQuantizer

from tutorlib import models

MB, GB = 2**20, 2**30
METHODS = models.METHODS


# Optimizer state bytes per parameter; seed 000's "highly optimized" 64 GB for Llama-2-7B: 2+2+4+2.
_OPTIMIZERS = dict.fromkeys(("adamw", "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"), 8)
_OPTIMIZERS |= dict.fromkeys(("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit"), 2) | {"sgd": 0}
_PARTS = ("weights", "gradients", "optimizer", "activations")
_STATE = {8: "AdamW m + v in fp32", 2: "8-bit AdamW m + v", 0: "plain SGD keeps no state"}


@dataclass
class Estimate:
    """Training memory by component in GB, with the arithmetic behind every number (`explain()`)."""

    title: str  # model · dtype, method
    params: int
    trainable: int
    breakdown: dict[str, float]
    total_gb: float
    lines: list[str]  # the set-up and its assumptions, then one line per term: bytes × count = size

    def fits(self, gb: float, reserve_gb: float = 0.0) -> bool:
        return self.total_gb + reserve_gb <= gb

    def explain(self) -> str:
        total = f"{'total:':<13}{self.total_gb:.2f} GB, without the CUDA context (~0.4 GB)"
        return "\n".join([*self.lines, total])

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:.3g}" for k, v in self.breakdown.items())
        return f"{self.title}: {self.total_gb:.3g} GB ({parts})"


def estimate(
    model: Any,
    *,
    method: str = "full",
    dtype: Any = torch.float16,
    batch_size: int = 1,
    seq_len: int = 512,
    optimizer: str = "adamw",
    lora: Any = None,
    activation_checkpointing: bool = False,
) -> Estimate:
    """Training memory before loading: `model` is a name or hub id, a folder, a config, or an int
    parameter count (then only weights, gradients and optimizer states are estimated)."""
    dname = _check(method, dtype, batch_size, seq_len, optimizer)
    w, state, on = getattr(torch, dname).itemsize, _OPTIMIZERS[optimizer], activation_checkpointing
    name, cfg, spec = _resolve(model)
    if cfg is None and method != "full":
        raise ValueError(
            f"method {method!r} needs layer shapes: pass a model name, folder or config"
        )
    meta = None if cfg is None else models.on_meta(cfg)
    params = model if meta is None else sum(p.numel() for p in meta.parameters())
    batch = f"batch {batch_size} × {seq_len} tokens"
    notes = [f"{batch}, {dname} weights, checkpointing {'on' if on else 'off'}"]
    if method == "full":
        trainable, adapters = params, None
        terms = _full_terms(params, w, state, dname)
    else:
        adapted = _lora_terms(models.on_meta(cfg), method, lora or spec.lora, params, w)
        trainable, terms, adapters, more = adapted
        notes += more
        terms.append(_t("optimizer", state, trainable, f"LoRA params ({_STATE[state]})"))
    if meta is None:
        terms.append(
            ("activations", 0, "not estimated: a bare parameter count has no layer shapes")
        )
    else:
        notes.append(
            "PyTorch SDPA attention (the default) recomputes the s×s scores, not storing them"
        )
        terms += _activation_terms(meta, cfg, batch_size, seq_len, w, on, adapters)
    title = f"{name} · {dname} · {method}"
    head = [f"{title}: {params:,} parameters, {trainable:,} trainable"]
    breakdown, lines = _tally(terms)
    lines = head + [f"assumes: {note}" for note in notes] + lines
    return Estimate(title, params, trainable, breakdown, sum(breakdown.values()), lines)


def _check(method: str, dtype: Any, batch_size: int, seq_len: int, optimizer: str) -> str:
    """The dtype's name, after checking every argument `estimate` computes with."""
    if method not in METHODS or optimizer not in _OPTIMIZERS:
        expected = f"method one of {METHODS} and optimizer one of {tuple(_OPTIMIZERS)}"
        raise ValueError(f"expected {expected}; got {method!r} and {optimizer!r}")
    if not all(type(v) is int and v > 0 for v in (batch_size, seq_len)):
        got = f"{batch_size!r} and {seq_len!r}"
        raise ValueError(f"batch_size and seq_len must be positive ints, got {got}")
    if (dname := str(dtype).removeprefix("torch.")) not in ("float32", "float16", "bfloat16"):
        expected = "torch.float32, torch.float16 or torch.bfloat16"
        raise ValueError(f"dtype must be {expected}, got {dtype!r}")
    return dname


def _full_terms(params: int, w: int, state: int, dname: str) -> list[tuple[str, float, str]]:
    """Every parameter trains: weights, gradients, optimizer states. Mixed precision (16-bit
    weights) keeps an fp32 master copy beside the optimizer's moments."""
    master = 4 if w == 2 else 0
    kept = f"fp32 master copy 4 + {_STATE[state]}" if master else _STATE[state]
    what = f"params ({dname})"
    return [
        _t("weights", w, params, what),
        _t("gradients", w, params, what),
        _t("optimizer", master + state, params, f"params ({kept})"),
    ]


def _tally(terms: list[tuple[str, float, str]]) -> tuple[dict[str, float], list[str]]:
    """GB per component, and one line per term (a component's later terms start with '+')."""
    breakdown, lines, previous = dict.fromkeys(_PARTS, 0.0), [], ""
    for component, nbytes, text in terms:
        breakdown[component] += nbytes / GB
        label, text = ("", "+ " + text) if component == previous else (component + ":", text)
        size = f"{nbytes / GB:.2f} GB" if nbytes >= 0.01 * GB else f"{nbytes / MB:.2f} MB"
        lines.append(f"{label:<13}{text} = {size}")
        previous = component
    return breakdown, lines


def _resolve(model: Any) -> tuple[str, PretrainedConfig | None, Any]:
    """(a name for the title, the config or None, the registry entry of its family or None)."""
    if isinstance(model, PretrainedConfig) or (Path(str(model)) / "config.json").is_file():
        cfg = model if isinstance(model, PretrainedConfig) else AutoConfig.from_pretrained(model)
        family = next((s for s in models.MODELS.values() if s.family == cfg.model_type), None)
        return Path(cfg.name_or_path).name or cfg.model_type, cfg, family
    if isinstance(model, str):
        spec = models.spec(model)  # a ValueError naming the course's models
        return spec.name, models.config(spec.name), spec
    if type(model) is int and model > 0:
        return f"{model:,}-parameter model", None, None
    expected = "a model name, hub id, folder, PretrainedConfig or int"
    raise TypeError(f"model must be {expected}; got {model!r}")


def _activation_terms(
    meta: Any, cfg: Any, b: int, s: int, w: int, checkpointing: bool, adapters: int | None
) -> list:
    """Stored activations after Korthikanti et al. 2022, in 16-bit: 18sbh + 4sbi per block (8sbi
    for a gated MLP of width i; 6sbi more for gelu_new, whose tanh formula saves three tensors),
    13sbh more for T5's cross-attention. Under LoRA frozen linears keep no inputs (-6sbh - 2sbi)
    and the adapters keep `adapters` bytes a token. Checkpointing keeps 2sbh per block; backward
    then holds the larger of one recomputed block and the fp32 logits (freed before the blocks'
    backward), as benchmarks/memory_accounting.py measured."""
    block = next(m for m in meta.modules() if isinstance(m, torch.nn.ModuleList))[0]
    linears = [m for m in block.modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    widths = [m.nf if isinstance(m, Conv1D) else m.out_features for m in linears]
    h, i = cfg.hidden_size, max(widths)  # the widest linear is the MLP's
    dec = cfg.num_decoder_layers if cfg.is_encoder_decoder else 0
    act = [getattr(cfg, a, "") for a in ("activation_function", "hidden_act", "dense_act_fn")]
    mlp = (8 if widths.count(i) > 1 else 4) + 6 * ("gelu_new" in act)
    n, v, scale = cfg.num_hidden_layers + dec, cfg.vocab_size, w / 2
    one, cross = (18 * h + mlp * i) * s * b, 13 * h * s * b
    lora = ""
    if adapters is not None:
        one += (adapters - 6 * h - 2 * i) * s * b
        lora = f" - 6sbh - 2sbi + {adapters}sb for LoRA's inputs"
    text = f"(18sbh + {mlp}sbi{lora}) bytes, s={s} b={b} h={h} i={i}"
    text += " × 2 for fp32" if w == 4 else ""
    logits = _t("activations", 4, b * s * v, f"logits {b}×{s}×{v} (fp32 for the loss)")
    if not checkpointing:
        text += f" + {dec} × 13sbh cross-attention" if dec else ""
        return [("activations", (n * one + dec * cross) * scale, f"{n} blocks × {text}"), logits]
    kept = ("activations", n * 2 * s * b * h * scale, f"{n} blocks × 2sbh kept (the block inputs)")
    block = ("activations", (one + (cross if dec else 0)) * scale, f"1 block recomputed: {text}")
    peak = max(logits, block, key=lambda term: term[1])  # backward holds one of them at a time
    return [kept, (*peak[:2], f"{peak[2]} (the larger of the logits and 1 recomputed block)")]


def _quantized_terms(meta: Any, method: str, params: int) -> tuple[list, list[str]]:
    """The frozen base as transformers' own bitsandbytes call would quantize it, and notes."""
    eight = method == "lora-8bit"
    skip = HfQuantizer.get_modules_to_not_convert(meta, None, meta._keep_in_fp32_modules)
    bnb = BitsAndBytesConfig(load_in_8bit=eight, load_in_4bit=not eight)
    replace_with_bnb_linear(meta, skip, bnb)
    quantized = [m for m in meta.modules() if "bitsandbytes" in str(type(m))]
    shapes = [(m.in_features, m.out_features) for m in quantized]
    q = sum(a * b for a, b in shapes)
    # int8: one fp32 scale per output row; nf4: one fp32 absmax per 64 weights, rounded up per
    # tensor, and the tensor's own copy of the 16 NF4 levels (bitsandbytes' `code`)
    scales = sum(b if eight else -(-a * b // 64) + 16 for a, b in shapes)
    what = "fp32 scales, 1 per row" if eight else "fp32 absmax, 1 per 64, + 16 levels"
    terms = [
        _t("weights", 1 if eight else 0.5, q, f"Linear weights ({'int8' if eight else 'nf4'})"),
        _t("weights", 4, scales, what),
        _t("weights", 4, params - q, "other params (embeddings, norms, lm_head; fp32)"),
    ]
    notes = ["prepare_model_for_kbit_training casts every 16-bit parameter left to fp32"]
    if not shapes:
        notes.append("transformers quantized no layer: it takes plain nn.Linear, not FalconLinear")
    return terms, notes


def _lora_terms(meta: Any, method: str, lora: Any, params: int, w: int) -> tuple:
    """(trainable, terms, adapter input bytes per token and block, notes): the frozen base and
    peft's adapters, as `get_peft_model` builds them."""
    terms, notes = [_t("weights", w, params, f"frozen params ({w * 8}-bit)")], []
    if method != "lora":
        terms, notes = _quantized_terms(meta, method, params)
    # a LoraConfig is copied: peft fills in its targets; unknown families get peft's own error
    config = replace(lora) if isinstance(lora, LoraConfig) else LoraConfig(**lora)
    wrapped = get_peft_model(meta, config)
    found = wrapped.targeted_module_names
    asked = config.target_modules if isinstance(config.target_modules, (list, set)) else []
    if missing := [t for t in asked if not any(f.endswith("." + t) for f in found)]:
        # peft itself says nothing when some of the names match no layer
        raise ValueError(f"LoRA target_modules {sorted(missing)} match no layer of this model")
    n = wrapped.get_nb_trainable_parameters()[0]
    names = ", ".join(sorted({f.split(".")[-1] for f in found}))
    terms.append(_t("weights", 4, n, f"LoRA params on {names} (fp32, as peft keeps them)"))
    terms.append(_t("gradients", 4, n, "LoRA params (fp32)"))
    # Per block, each adapter keeps its input (16-bit: 2 bytes), and with dropout p > 0 a dropped
    # copy with a 1-byte mask as well
    block = next(m for m in wrapped.modules() if isinstance(m, torch.nn.ModuleList))[0]
    adapters = [m for m in block.modules() if hasattr(m, "lora_A")]
    inputs = sum(
        m.in_features * (3 if getattr(m.lora_dropout["default"], "p", 0) else 2) for m in adapters
    )
    return n, terms, inputs, notes


def _t(component: str, per: float, count: int, what: str) -> tuple[str, float, str]:
    """One term: `per` bytes × `count` values, described."""
    if count >= 1e9:
        n = f"{count / 1e9:.3g}B"
    else:
        n = f"{count / 1e6:.3g}M" if count >= 1e5 else f"{count:,}"
    return component, per * count, f"{per:g} byte{'s' * (per != 1)} × {n} {what}"
