"""Memory: measure it, estimate it before loading, cap it, free it, run out of it (GB = 2**30 bytes)."""

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, BitsAndBytesConfig, PretrainedConfig, TrainerCallback
from transformers.integrations import replace_with_bnb_linear
from transformers.quantizers.base import HfQuantizer

from tutorlib import models

MB, GB = 2**20, 2**30
METHODS = ("full", "lora", "lora-8bit", "qlora")


@dataclass
class Usage:
    """What a `track()` block used, filled in when it exits (also on error)."""

    peak_mb: float = 0.0
    kind: str = "cpu_rss"  # "cuda": torch's allocator, tensors only; "cpu_rss": the whole process
    baseline_mb: float = 0.0  # the same quantity when the block began
    seconds: float = 0.0

    def __str__(self) -> str:
        took = f"{self.seconds / 60:.2f} min" if self.seconds >= 60 else f"{self.seconds:.1f} s"
        return f"{took} · peak {self.peak_mb:,.0f} MB ({self.kind})"


@contextmanager
def track(interval_s: float = 0.01) -> Iterator[Usage]:
    """Time the block and record its peak memory: the CUDA allocator's peak, else RSS sampled in a thread."""
    cuda, process, stop = torch.cuda.is_available(), psutil.Process(), threading.Event()
    if cuda:  # on a CPU build the CUDA calls raise or silently return 0
        torch.cuda.reset_peak_memory_stats()

    def read() -> float:  # CUDA: torch's own peak counter; CPU: no resettable peak, so the RSS right now
        return torch.cuda.max_memory_allocated() / MB if cuda else process.memory_info().rss / MB

    def sample() -> None:
        while not cuda and not stop.wait(interval_s):  # CUDA keeps its own peak
            usage.peak_mb = max(usage.peak_mb, read())

    usage, start = Usage(kind="cuda" if cuda else "cpu_rss"), time.perf_counter()
    usage.baseline_mb = usage.peak_mb = torch.cuda.memory_allocated() / MB if cuda else read()
    (sampler := threading.Thread(target=sample, daemon=True)).start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        usage.peak_mb, usage.seconds = max(usage.peak_mb, read()), time.perf_counter() - start


# Optimizer state bytes per parameter. Seed 000's "highly optimized" 64 GB for Llama-2-7B: 2 + 2 + 4 + 2.
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
        return "\n".join([*self.lines, f"{'total:':<13}{self.total_gb:.2f} GB, without the CUDA context (~0.4 GB)"])

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
    """Training memory before loading: `model` is a name or hub id, folder, config or int parameter count."""
    if method not in METHODS or optimizer not in _OPTIMIZERS:
        raise ValueError(f"method must be one of {METHODS} and optimizer one of {tuple(_OPTIMIZERS)}")
    if not all(type(v) is int and v > 0 for v in (batch_size, seq_len)):
        raise ValueError(f"batch_size and seq_len must be positive ints, got {batch_size!r} and {seq_len!r}")
    if (dname := str(dtype).removeprefix("torch.")) not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
    (name, cfg, spec), w, on = _resolve(model), getattr(torch, dname).itemsize, activation_checkpointing
    if cfg is None and method != "full":
        raise ValueError(f"method {method!r} needs layer shapes: pass a model name, folder or config")
    notes = [f"batch {batch_size} × {seq_len} tokens, {dname} weights, checkpointing {'on' if on else 'off'}"]
    meta, state = None if cfg is None else models.on_meta(cfg), _OPTIMIZERS[optimizer]
    params = trainable = model if meta is None else sum(p.numel() for p in meta.parameters())
    if method == "full":  # mixed precision keeps an fp32 master copy; every linear keeps its input
        master, what, adapters = (4 if w == 2 else 0), f"params ({dname})", None
        kept = f"fp32 master copy 4 + {_STATE[state]}" if master else _STATE[state]
        terms = [_t("weights", w, params, what), _t("gradients", w, params, what)]
        terms.append(_t("optimizer", master + state, params, f"params ({kept})"))
    else:
        trainable, terms, adapters = _lora_terms(models.on_meta(cfg), method, lora, spec, params, w, notes)
        terms.append(_t("optimizer", state, trainable, f"LoRA params ({_STATE[state]})"))
    if meta is not None:
        notes.append("PyTorch SDPA attention (the default) recomputes the s×s scores instead of storing them")
    no_shapes = [("activations", 0, "not estimated: a bare parameter count has no layer shapes")]
    terms += no_shapes if meta is None else _activation_terms(meta, cfg, batch_size, seq_len, w, on, adapters)
    title, breakdown = f"{name} · {dname} · {method}", dict.fromkeys(_PARTS, 0.0)
    lines, previous = [f"{title}: {params:,} parameters, {trainable:,} trainable"], ""
    lines += [f"assumes: {note}" for note in notes]
    for component, nbytes, text in terms:
        breakdown[component] += nbytes / GB
        label, text = ("", "+ " + text) if component == previous else (component + ":", text)
        size = f"{nbytes / GB:.2f} GB" if nbytes >= 0.01 * GB else f"{nbytes / MB:.2f} MB"
        lines.append(f"{label:<13}{text} = {size}")
        previous = component
    return Estimate(title, params, trainable, breakdown, sum(breakdown.values()), lines)


def _resolve(model: Any) -> tuple[str, PretrainedConfig | None, models.Spec | None]:
    if isinstance(model, PretrainedConfig) or (Path(str(model)) / "config.json").is_file():
        cfg = model if isinstance(model, PretrainedConfig) else AutoConfig.from_pretrained(model)
        family = [s for s in models.MODELS.values() if s.family == cfg.model_type]
        return Path(cfg.name_or_path).name or cfg.model_type, cfg, (family or [None])[0]
    if isinstance(model, str):
        spec = models.spec(model)  # a ValueError naming the course's models
        return spec.name, models.config(spec.name), spec
    if type(model) is int and model > 0:
        return f"{model:,}-parameter model", None, None
    raise TypeError(f"model must be a model name, hub id, folder, PretrainedConfig or int; got {model!r}")


def _activation_terms(meta: Any, cfg: Any, b: int, s: int, w: int, checkpointing: bool, adapters: int | None) -> list:
    """Stored activations after Korthikanti et al. 2022 in 16-bit: 18sbh + 4sbi per block (8sbi for a gated MLP
    of width i; 6sbi more for gelu_new, whose tanh formula saves three tensors), 13sbh more for T5's cross-
    attention. Under LoRA frozen linears keep no inputs (-6sbh - 2sbi) and the adapters keep `adapters` bytes
    a token. Checkpointing keeps 2sbh per block; backward then holds the larger of one recomputed block and the
    fp32 logits (freed before the blocks' backward), as benchmarks/memory_accounting.py measured."""
    from transformers.pytorch_utils import Conv1D

    block = next(m for m in meta.modules() if isinstance(m, torch.nn.ModuleList))[0]
    linears = [m for m in block.modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    widths = [m.nf if isinstance(m, Conv1D) else m.out_features for m in linears]  # the widest is the MLP
    h, i, dec = cfg.hidden_size, max(widths), cfg.num_decoder_layers if cfg.is_encoder_decoder else 0
    act = [getattr(cfg, a, "") for a in ("activation_function", "hidden_act", "dense_act_fn")]
    mlp = (8 if widths.count(i) > 1 else 4) + 6 * ("gelu_new" in act)
    n, v = cfg.num_hidden_layers + dec, cfg.vocab_size
    one, cross, scale = ((18 * h + mlp * i) * s * b, 13 * h * s * b, w / 2)
    one += 0 if adapters is None else (adapters - 6 * h - 2 * i) * s * b
    lora = "" if adapters is None else f" - 6sbh - 2sbi + {adapters}sb for LoRA's inputs"
    text = f"(18sbh + {mlp}sbi{lora}) bytes, s={s} b={b} h={h} i={i}" + (" × 2 for fp32" if w == 4 else "")
    logits = _t("activations", 4, b * s * v, f"logits {b}×{s}×{v} (fp32 for the loss)")
    if not checkpointing:
        cross_text = f" + {dec} × 13sbh cross-attention" if dec else ""
        return [("activations", (n * one + dec * cross) * scale, f"{n} blocks × {text}{cross_text}"), logits]
    kept = ("activations", n * 2 * s * b * h * scale, f"{n} blocks × 2sbh kept (the block inputs)")
    block = ("activations", (one + (cross if dec else 0)) * scale, f"1 block recomputed: {text}")
    peak = max(logits, block, key=lambda term: term[1])  # backward holds one of them at a time
    return [kept, (*peak[:2], f"{peak[2]} (the larger of the logits and 1 recomputed block)")]


def _lora_terms(meta: Any, method: str, lora: Any, spec: Any, params: int, w: int, notes: list) -> tuple:
    """The frozen base (as transformers' own bitsandbytes call would quantize it) and peft's adapters."""
    terms = [_t("weights", w, params, f"frozen params ({w * 8}-bit)")]
    if method != "lora":
        eight = method == "lora-8bit"
        skip = HfQuantizer.get_modules_to_not_convert(meta, None, meta._keep_in_fp32_modules)
        replace_with_bnb_linear(meta, skip, BitsAndBytesConfig(load_in_8bit=eight, load_in_4bit=not eight))
        shapes = [(m.in_features, m.out_features) for m in meta.modules() if "bitsandbytes" in str(type(m))]
        q = sum(a * b for a, b in shapes)
        # int8: one fp32 scale per output row; nf4: one fp32 absmax per 64 weights, rounded up per tensor,
        # and the tensor's own copy of the 16 NF4 levels (bitsandbytes' `code`)
        scales = sum(b if eight else -(-a * b // 64) + 16 for a, b in shapes)
        terms = [_t("weights", 1 if eight else 0.5, q, f"Linear weights ({'int8' if eight else 'nf4'})")]
        terms.append(_t("weights", 4, scales, "fp32 scales, 1 per row" if eight else "fp32 absmax, 1 per 64, + 16 levels"))
        terms.append(_t("weights", 4, params - q, "other params (embeddings, norms, lm_head; fp32)"))
        notes.append("prepare_model_for_kbit_training casts every 16-bit parameter left to fp32")
        if not shapes:
            notes.append("transformers quantized no layer: it takes plain nn.Linear, not FalconLinear")
    # a LoraConfig is copied because peft fills in its targets; unknown families get peft's own error
    lora = lora or getattr(spec, "lora", {})
    config = replace(lora) if isinstance(lora, LoraConfig) else LoraConfig(**lora)
    wrapped = get_peft_model(meta, config)
    found = wrapped.targeted_module_names
    asked = config.target_modules if isinstance(config.target_modules, (list, set)) else []
    if missing := [t for t in asked if not any(f.endswith("." + t) for f in found)]:  # peft says nothing
        raise ValueError(f"LoRA target_modules {sorted(missing)} match no layer of this model")
    n, names = wrapped.get_nb_trainable_parameters()[0], ", ".join(sorted({f.split(".")[-1] for f in found}))
    terms += [_t("weights", 4, n, f"LoRA params on {names} (fp32, as peft keeps them)")]
    # Per block, each adapter keeps its input (16-bit: 2 bytes), dropped (a new copy, with a 1-byte mask) if p > 0
    block = next(m for m in wrapped.modules() if isinstance(m, torch.nn.ModuleList))[0]
    inputs = sum(m.in_features * (3 if getattr(m.lora_dropout["default"], "p", 0) else 2) for m in block.modules() if hasattr(m, "lora_A"))
    return n, [*terms, _t("gradients", 4, n, "LoRA params (fp32)")], inputs


def _t(component: str, per: float, count: int, what: str) -> tuple[str, float, str]:
    n = f"{count / 1e9:.3g}B" if count >= 1e9 else f"{count / 1e6:.3g}M" if count >= 1e5 else f"{count:,}"
    return component, per * count, f"{per:g} byte{'s' * (per != 1)} × {n} {what}"


def _positive(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{label} must be a number, e.g. 16; got {value!r} ({type(value).__name__})")
    if not value > 0:
        raise ValueError(f"{label} must be a positive number, got {value!r}")
    return float(value)


def limit(gb: float) -> bool:
    """Cap PyTorch's CUDA allocator at `gb` GB so a big GPU behaves like a smaller card; False on CPU."""
    gb = _positive("gb (the card's size in GB)", gb)
    total = torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else 0  # the current device's size
    if capped := gb * GB < total:
        torch.cuda.set_per_process_memory_fraction(gb * GB / total)  # the CUDA context comes on top
    print(f"memory.limit({gb:g}): {'capped' if capped else 'nothing to cap'} ({total / GB:.1f} GB of CUDA memory)")
    return capped


def free(*objects: Any) -> None:
    """Empty models and tensors in place (so what a Trainer still references goes too), then collect."""
    for obj in objects:
        if isinstance(obj, (torch.nn.Module, torch.Tensor)):
            for t in [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else [obj]:
                t.grad, t.data = None, torch.empty(0, dtype=t.dtype, device=t.device)
        elif obj is not None:
            raise TypeError(f"free() empties models and tensors, not {type(obj).__name__}; `del` the others")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def storages(model: Any, optimizer: Any = None) -> dict[str, dict[tuple, int]]:
    """{storage: bytes} training holds: weights (with bitsandbytes' state), gradients, optimizer state."""
    params, out, seen = list(model.parameters()), {}, set()
    quant = [q for p in params if (q := getattr(p, "quant_state", None))]  # 4-bit; 8-bit keeps SCB on the weight
    consts = [getattr(x, a, None) for x in params + quant + [getattr(q, "state2", None) for q in quant]
              for a in ("SCB", "absmax", "code", "offset")]
    states = [v for s in getattr(optimizer, "state", {}).values() for v in s.values()]
    for group, tensors in {"weights": params + consts, "gradients": [p.grad for p in params], "optimizer": states}.items():
        out[group] = {}  # tied and viewed tensors share a storage: it counts once, in its first group
        for t in (t.untyped_storage() for t in tensors if isinstance(t, torch.Tensor) and t.device.type != "meta"):
            if (key := (t.device, t.data_ptr())) not in seen:
                seen.add(key)
                out[group][key] = t.nbytes()
    return out


class SimulatedOutOfMemory(torch.OutOfMemoryError):
    """`TensorBudget`'s refusal; a torch.OutOfMemoryError, so one `except` catches it and a real OOM."""


class TensorBudget(TrainerCallback):
    """Trainer callback measuring training state (`measured`, `peak_mb`, MB) each step; refuses over it."""

    def __init__(self, budget_mb: float) -> None:
        self.budget_mb, self.measured, self.peak_mb = _positive("budget_mb", budget_mb), {}, 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        self.measured = {g: sum(sizes.values()) / MB for g, sizes in storages(model, kwargs.get("optimizer")).items()}
        self.peak_mb = max(self.peak_mb, held := sum(self.measured.values()))
        if held > self.budget_mb:
            got = ", ".join(f"{k} {v:,.2f} MB" for k, v in self.measured.items())
            over = f"over the budget of {self.budget_mb:,.2f} MB"
            raise SimulatedOutOfMemory(f"refused after measuring {held:,.2f} MB ({got}), {over}")

    on_optimizer_step = on_step_end = on_train_begin


def emulate_card(gb: float, *, model_name: str, profile: Any) -> TensorBudget:
    """A `gb` GB card: under `full` a real CUDA cap (no GPU: scaled to the checkpoint), under `smoke` to the stand-in."""
    gb = _positive("gb (the card's size in GB)", gb)
    if not profile.is_smoke and torch.cuda.is_available():
        limit(gb)
        return TensorBudget(gb * 1024)
    if not profile.is_smoke:  # `full` on a CPU (make full-check): scale the card to the checkpoint's share
        share = models.on_meta(AutoConfig.from_pretrained(profile.model(model_name))).num_parameters()
        share /= models.on_meta(model_name).num_parameters()  # the checkpoint may hold a few layers only
        print(f"no GPU to cap: a {gb:g} GB card is {gb * share:.2f} GB for a checkpoint of {share:.1%} of the real model")
        return TensorBudget(gb * 1024 * share)
    stand_in, dtype = profile.model(model_name), profile.dtype_for(model_name)
    held = [estimate(stand_in, method=m, dtype=dtype) for m in ("lora-8bit", "full")]
    low, high = ((e.total_gb - e.breakdown["activations"]) * 1024 for e in held)
    budget = (low * high) ** 0.5
    needs = f"between its 8-bit LoRA ({low:.2f} MB) and full fine-tune ({high:.2f} MB) needs"
    print(f"scaled to the {profile.name} stand-in: a {gb:g} GB card is a {budget:.2f} MB budget, {needs}")
    return TensorBudget(budget)
