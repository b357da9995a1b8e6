"""Memory: measure it, estimate it before loading, cap it, free it, and survive running out of it.

`track()` measures the peak of a block: CUDA allocator peaks on a GPU, the process's peak resident set
size on CPU (labelled `cpu_rss`, because it is a different quantity). `estimate()` does the usual
back-of-the-envelope accounting (weights, gradients, optimizer states, activations) for full
fine-tuning, LoRA, 8-bit LoRA and QLoRA of the course's five models, line by line, before anything is
downloaded. `limit()` makes a big GPU behave like a smaller card; `TensorBudget` does the CPU-side
equivalent for the smoke profile by counting the bytes training actually holds; `attempt()` runs a
training function and turns an out-of-memory error into a report instead of a dead notebook.
All sizes in GB are GiB (2**30 bytes) and MB are MiB (2**20 bytes), the units torch and nvidia-smi use.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import psutil
import torch
from transformers import PretrainedConfig, TrainerCallback

from tutorlib.profile import canonical

log = logging.getLogger(__name__)

T = TypeVar("T")
MB = 2**20
GB = 2**30

METHODS = ("full", "lora", "lora-8bit", "qlora")

# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass
class Peak:
    """Peak memory of one `track()` block; the fields are filled in when the block exits.

    `kind` is `cuda` (torch's allocator: `max_memory_allocated`, tensors only, no CUDA context) or
    `cpu_rss` (the whole process's resident memory, interpreter and libraries included). `baseline_mb`
    is the same quantity at entry, so `delta_mb` is what the block added.
    """

    peak_mb: float = 0.0
    kind: str = "cpu_rss"
    reserved_mb: float | None = None
    baseline_mb: float = 0.0

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.baseline_mb

    def __str__(self) -> str:
        what = "GPU tensors" if self.kind == "cuda" else "process RSS (CPU RAM)"
        reserved = f", reserved {self.reserved_mb:,.0f} MB" if self.reserved_mb is not None else ""
        return (
            f"peak {self.peak_mb:,.0f} MB {what} [{self.kind}]{reserved}; baseline {self.baseline_mb:,.0f} MB"
        )


class _RssSampler:
    """Background thread recording the highest RSS seen; CPU memory has no resettable peak counter."""

    def __init__(self, interval_s: float) -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, name="tutorlib-rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        """Stop sampling, take a last reading and return the peak in bytes."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
        return self.peak


@contextmanager
def track(interval_s: float = 0.01) -> Iterator[Peak]:
    """Measure the peak memory of the `with` block; the yielded `Peak` is filled in on exit, also on error.

    With CUDA: resets torch's peak counters, then reads `max_memory_allocated` / `max_memory_reserved`.
    Without: samples this process's RSS every `interval_s` seconds (plus once at entry and exit) and
    reports the absolute peak, labelled `cpu_rss`. No CUDA function is touched on a CPU build, where
    several of them silently return 0 or raise.
    """
    peak = Peak()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        peak.kind, peak.baseline_mb = "cuda", torch.cuda.memory_allocated() / MB
        try:
            yield peak
        finally:
            torch.cuda.synchronize()
            peak.peak_mb = torch.cuda.max_memory_allocated() / MB
            peak.reserved_mb = torch.cuda.max_memory_reserved() / MB
        return
    sampler = _RssSampler(interval_s)
    peak.kind, peak.baseline_mb = "cpu_rss", sampler.peak / MB
    try:
        yield peak
    finally:
        peak.peak_mb = sampler.stop() / MB


# ---------------------------------------------------------------------------------------------
# Architectures and parameter counts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """The shape numbers of one transformer, enough to count its parameters and estimate activations.

    `num_layers` counts the (encoder) layers; `decoder_layers` is only non-zero for T5. `num_kv_heads`
    is the effective number of key/value heads (1 for Falcon-7B's multi-query attention).
    """

    family: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    tied_embeddings: bool
    head_dim: int = 0  # 0 means hidden_size // num_heads
    decoder_layers: int = 0
    gated_mlp: bool = False  # two input projections (Llama's SwiGLU, T5 v1.1's gated GELU)
    attention_bias: bool = False
    mlp_bias: bool = False
    norms_per_layer: int = 2
    relative_buckets: int = 0  # T5's relative position bias, in the first layer of each stack
    published: str = field(default="", compare=False)  # the total the model card states, for comparison

    def __post_init__(self) -> None:
        if not self.head_dim:  # frozen dataclass: fill the default through object.__setattr__
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)

    @property
    def params(self) -> int:
        return _param_count(self)

    def config(self) -> PretrainedConfig:
        """The transformers config of this architecture (build a model on the meta device to check counts)."""
        from transformers import FalconConfig, GPT2Config, LlamaConfig, PhiConfig, T5Config

        h, layers, heads, i, vocab = (
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.intermediate_size,
            self.vocab_size,
        )
        if self.family == "gpt2":
            return GPT2Config(
                n_embd=h,
                n_layer=layers,
                n_head=heads,
                n_inner=i,
                vocab_size=vocab,
                n_positions=self.max_positions,
            )
        if self.family == "llama":
            return LlamaConfig(
                hidden_size=h,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=self.num_kv_heads,
                intermediate_size=i,
                vocab_size=vocab,
                max_position_embeddings=self.max_positions,
                tie_word_embeddings=self.tied_embeddings,
                head_dim=self.head_dim,
                attention_bias=self.attention_bias,
                mlp_bias=self.mlp_bias,
            )
        if self.family == "falcon":
            return FalconConfig(
                hidden_size=h,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                multi_query=self.num_kv_heads == 1,
                parallel_attn=self.norms_per_layer == 1,
                ffn_hidden_size=i,
                vocab_size=vocab,
                bias=self.attention_bias,
                max_position_embeddings=self.max_positions,
                tie_word_embeddings=self.tied_embeddings,
            )
        if self.family == "phi":
            return PhiConfig(
                hidden_size=h,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=self.num_kv_heads,
                intermediate_size=i,
                vocab_size=vocab,
                max_position_embeddings=self.max_positions,
                tie_word_embeddings=self.tied_embeddings,
            )
        return T5Config(
            d_model=h,
            num_layers=layers,
            num_decoder_layers=self.decoder_layers,
            num_heads=heads,
            d_kv=self.head_dim,
            d_ff=i,
            vocab_size=vocab,
            feed_forward_proj="gated-gelu" if self.gated_mlp else "relu",
            relative_attention_num_buckets=self.relative_buckets,
            tie_word_embeddings=self.tied_embeddings,
        )


# Numbers from each model's config.json on the Hugging Face hub; totals computed by `_param_count` and
# cross-checked against a model built from `Arch.config()` on the meta device (tests/test_memory.py).
# fmt: off
ARCHITECTURES: dict[str, Arch] = {
    # distilgpt2: 81,912,576 params. Model card: "82M"; seed 000 says 85M and 84M.
    "distilgpt2": Arch(
        "gpt2", hidden_size=768, num_layers=6, num_heads=12, num_kv_heads=12, intermediate_size=3072,
        vocab_size=50257, max_positions=1024, tied_embeddings=True, attention_bias=True, mlp_bias=True,
        published="82M (model card)",
    ),
    # meta-llama/Llama-2-7b-hf: 6,738,415,616 params, the "6.74B" of the HF model page.
    "meta-llama/Llama-2-7b-hf": Arch(
        "llama", hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, intermediate_size=11008,
        vocab_size=32000, max_positions=4096, tied_embeddings=False, gated_mlp=True,
        published="6.74B (HF model page)",
    ),
    # tiiuae/falcon-7b (multi_query, parallel_attn, bias=False, new_decoder_architecture=False):
    # 6,921,720,704 params. Seed 002's "6,954,357,632" is this plus its 32,636,928 LoRA parameters.
    "tiiuae/falcon-7b": Arch(
        "falcon", hidden_size=4544, num_layers=32, num_heads=71, num_kv_heads=1, intermediate_size=18176,
        vocab_size=65024, max_positions=2048, tied_embeddings=True, norms_per_layer=1,
        published="6.92B (seed 002, less its adapter)",
    ),
    # microsoft/phi-2 (biases everywhere, one LayerNorm per parallel block, lm_head with a bias):
    # 2,779,683,840 params. Model card: "2.7 billion"; HF model page 2.78B.
    "microsoft/phi-2": Arch(
        "phi", hidden_size=2560, num_layers=32, num_heads=32, num_kv_heads=32, intermediate_size=10240,
        vocab_size=51200, max_positions=2048, tied_embeddings=False, attention_bias=True, mlp_bias=True,
        norms_per_layer=1,
        published="2.78B (HF model page)",
    ),
    # google/flan-t5-base (T5 v1.1: gated GELU, lm_head separate from the embedding): 247,577,856 params,
    # the "248M" of the HF model page. T5 has no position limit (relative positions); 512 is its training length.
    "google/flan-t5-base": Arch(
        "t5", hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, intermediate_size=2048,
        vocab_size=32128, max_positions=512, tied_embeddings=False, decoder_layers=12, gated_mlp=True,
        relative_buckets=32, published="248M (HF model page)",
    ),
}
# fmt: on


@dataclass(frozen=True)
class _Linear:
    path: str  # the end of the module's qualified name, for peft-style target matching
    fan_in: int
    fan_out: int
    count: int  # instances in the whole model
    kind: str  # "attention" or "mlp"
    bias: bool


def _linears(a: Arch) -> list[_Linear]:
    """Every Linear (GPT-2: Conv1D) layer inside the transformer blocks; embeddings and lm_head excluded."""
    h, i, L = a.hidden_size, a.intermediate_size, a.num_layers
    ab, mb = a.attention_bias, a.mlp_bias
    q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    if a.family == "gpt2":
        return [
            _Linear("attn.c_attn", h, 3 * h, L, "attention", ab),
            _Linear("attn.c_proj", h, h, L, "attention", ab),
            _Linear("mlp.c_fc", h, i, L, "mlp", mb),
            _Linear("mlp.c_proj", i, h, L, "mlp", mb),
        ]
    if a.family in ("llama", "phi"):
        out = "o_proj" if a.family == "llama" else "dense"
        ups = ["gate_proj", "up_proj"] if a.family == "llama" else ["fc1"]
        down = "down_proj" if a.family == "llama" else "fc2"
        return [
            _Linear("self_attn.q_proj", h, q, L, "attention", ab),
            _Linear("self_attn.k_proj", h, kv, L, "attention", ab),
            _Linear("self_attn.v_proj", h, kv, L, "attention", ab),
            _Linear(f"self_attn.{out}", q, h, L, "attention", ab),
            *(_Linear(f"mlp.{up}", h, i, L, "mlp", mb) for up in ups),
            _Linear(f"mlp.{down}", i, h, L, "mlp", mb),
        ]
    if a.family == "falcon":
        return [
            _Linear("self_attention.query_key_value", h, q + 2 * kv, L, "attention", ab),
            _Linear("self_attention.dense", h, h, L, "attention", ab),
            _Linear("mlp.dense_h_to_4h", h, i, L, "mlp", mb),
            _Linear("mlp.dense_4h_to_h", i, h, L, "mlp", mb),
        ]
    both, dec = L + a.decoder_layers, a.decoder_layers  # T5: self-attention and FF in both stacks
    attn = [_Linear(f"SelfAttention.{n}", h, q, both, "attention", ab) for n in "qkv"]
    attn += [_Linear("SelfAttention.o", q, h, both, "attention", ab)]
    attn += [_Linear(f"EncDecAttention.{n}", h, q, dec, "attention", ab) for n in "qkv"]
    attn += [_Linear("EncDecAttention.o", q, h, dec, "attention", ab)]
    ups = ["wi_0", "wi_1"] if a.gated_mlp else ["wi"]
    mlp = [_Linear(f"DenseReluDense.{up}", h, i, both, "mlp", mb) for up in ups]
    return attn + mlp + [_Linear("DenseReluDense.wo", i, h, both, "mlp", mb)]


def _param_count(a: Arch) -> int:
    """Exact parameter count: embeddings + block Linears + norms (+ lm_head when untied, + family extras)."""
    h = a.hidden_size
    n = sum(lin.count * (lin.fan_in * lin.fan_out + (lin.fan_out if lin.bias else 0)) for lin in _linears(a))
    norm = 2 * h if a.family in ("gpt2", "falcon", "phi") else h  # LayerNorm has a bias; RMSNorm has none
    final_norms = 2 if a.family == "t5" else 1
    n += norm * (a.num_layers * a.norms_per_layer + a.decoder_layers * (a.norms_per_layer + 1) + final_norms)
    n += a.vocab_size * h  # token embeddings
    if not a.tied_embeddings:
        n += a.vocab_size * h + (a.vocab_size if a.family == "phi" else 0)  # phi's lm_head has a bias
    if a.family == "gpt2":
        n += a.max_positions * h  # learned position embeddings
    return n + 2 * a.relative_buckets * a.num_heads  # T5: one bias table per stack


def arch_from_config(config: PretrainedConfig) -> Arch:
    """Read an `Arch` from a transformers config of one of the five families (real or tiny stand-in)."""
    mt = getattr(config, "model_type", None)
    if mt not in ("gpt2", "llama", "falcon", "phi", "t5"):
        raise ValueError(
            f"unsupported model_type {mt!r}; expected a config of gpt2, llama, falcon, phi or t5"
        )
    # attribute_map gives every family the generic names (n_embd -> hidden_size, d_model -> hidden_size, ...).
    h, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    common = dict(
        family=mt,
        hidden_size=h,
        num_layers=layers,
        num_heads=heads,
        vocab_size=config.vocab_size,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
    )
    if mt == "gpt2":
        return Arch(
            **common,
            num_kv_heads=heads,
            intermediate_size=config.n_inner or 4 * h,
            max_positions=config.n_positions,
            attention_bias=True,
            mlp_bias=True,
        )
    if mt in ("llama", "phi"):
        return Arch(
            **common,
            num_kv_heads=config.num_key_value_heads or heads,
            intermediate_size=config.intermediate_size,
            max_positions=config.max_position_embeddings,
            head_dim=getattr(config, "head_dim", None) or h // heads,
            gated_mlp=mt == "llama",
            attention_bias=mt == "phi" or bool(config.attention_bias),
            mlp_bias=mt == "phi" or bool(getattr(config, "mlp_bias", False)),
            norms_per_layer=2 if mt == "llama" else 1,
        )
    if mt == "falcon":
        if config.new_decoder_architecture:
            kv = config.num_kv_heads
        else:
            kv = 1 if config.multi_query else heads
        num_ln = config.num_ln_in_parallel_attn or (2 if config.new_decoder_architecture else 1)
        return Arch(
            **common,
            num_kv_heads=kv,
            intermediate_size=config.ffn_hidden_size,
            max_positions=config.max_position_embeddings,
            attention_bias=bool(config.bias),
            mlp_bias=bool(config.bias),
            norms_per_layer=2 if not config.parallel_attn else num_ln,
        )
    # T5 (transformers 5 always ties lm_head to the shared embedding for a model built from a config;
    # the real flan-t5 checkpoints carry a separate lm_head, which ARCHITECTURES reflects).
    return Arch(
        **common,
        num_kv_heads=heads,
        intermediate_size=config.d_ff,
        max_positions=512,
        head_dim=config.d_kv,
        decoder_layers=config.num_decoder_layers,
        gated_mlp=bool(config.is_gated_act),
        relative_buckets=config.relative_attention_num_buckets,
    )


def _resolve(model: Any) -> tuple[str, Arch | None, int]:
    """(display name, Arch or None, parameter count) from a name, folder, config, model, Arch or int."""
    if isinstance(model, bool) or (isinstance(model, int) and model <= 0):
        raise ValueError(f"a parameter count must be a positive int, got {model!r}")
    if isinstance(model, int):
        return f"{model / 1e9:.2f}B-parameter model", None, model
    if isinstance(model, Arch):
        return f"custom {model.family}", model, model.params
    if isinstance(model, (str, Path)):
        name = str(model)
        try:
            hub_id = canonical(name)
        except ValueError:
            hub_id = None
        if hub_id in ARCHITECTURES:
            return hub_id, ARCHITECTURES[hub_id], ARCHITECTURES[hub_id].params
        if (Path(name) / "config.json").is_file():  # a local folder, e.g. a smoke-profile stand-in
            from transformers import AutoConfig

            arch = arch_from_config(AutoConfig.from_pretrained(name, local_files_only=True))
            return Path(name).name, arch, arch.params
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(ARCHITECTURES)} (or a logical name, "
            "a local model folder, a transformers config, or a parameter count)"
        )
    config = getattr(model, "config", model)  # a loaded model carries its config
    if isinstance(config, PretrainedConfig):
        arch = arch_from_config(config)
        return getattr(config, "_name_or_path", "") or f"{arch.family} config", arch, arch.params
    raise TypeError(f"expected a model name, config, Arch or int parameter count, got {type(model).__name__}")


# ---------------------------------------------------------------------------------------------
# Estimating
# ---------------------------------------------------------------------------------------------

# Bytes of optimizer state per trainable parameter (fp32 AdamW: m and v; bitsandbytes 8-bit: m and v
# in one byte each, block constants ignored). "paged" only changes where the states live under pressure.
# Seed 000's "highly optimized" ~64 GB for a full Llama-2-7B fine-tune and "well under 1 GB" for
# DistilGPT-2 match mixed precision with 8-bit AdamW (2 + 2 + 4 + 2 = 10 bytes/param: 62.8 and 0.76 GB).
_OPTIMIZERS: dict[str, tuple[int, str]] = {
    "adamw": (8, "AdamW m + v in fp32"),
    "adamw_torch": (8, "AdamW m + v in fp32"),
    "adamw_torch_fused": (8, "AdamW m + v in fp32"),
    "paged_adamw_32bit": (8, "paged AdamW m + v in fp32"),
    "adamw_8bit": (2, "8-bit AdamW m + v"),
    "adamw_bnb_8bit": (2, "8-bit AdamW m + v"),
    "paged_adamw_8bit": (2, "paged 8-bit AdamW m + v"),
    "sgd": (0, "plain SGD keeps no state"),
}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    key = str(dtype).removeprefix("torch.").lower()
    if key not in _DTYPES:
        raise ValueError(
            f"unsupported dtype {dtype!r}; expected one of {', '.join(_DTYPES)} (or a torch dtype)"
        )
    return _DTYPES[key]


def _num(n: float) -> str:
    """6738415616 -> '6.74B'; 81912576 -> '81.9M'."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _size(nbytes: float) -> str:
    return f"{nbytes / GB:.2f} GB" if nbytes >= 0.01 * GB else f"{nbytes / MB:.1f} MB"


@dataclass
class Estimate:
    """The memory one training set-up needs, by component, with the arithmetic that produced it.

    `breakdown` (GB = 2**30 bytes) always has `weights`, `gradients`, `optimizer_states` and `activations`
    (logits included); it excludes the CUDA context (~0.3-0.5 GB, outside torch's allocator),
    allocator fragmentation and temporary buffers, so a set-up within ~10% of a card's size is marginal.
    """

    model: str
    method: str
    dtype: torch.dtype
    params: int
    trainable_params: int
    batch_size: int
    seq_len: int
    breakdown: dict[str, float]
    total_gb: float
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fits(self, gb: float, *, reserve_gb: float = 0.0) -> bool:
        """Whether the estimate fits a `gb` card, keeping `reserve_gb` free for context and fragmentation."""
        return self.total_gb + reserve_gb <= gb

    def summary(self) -> str:
        """One line: model, method, dtype, total and the four components."""
        parts = ", ".join(f"{k} {_size(v * GB)}" for k, v in self.breakdown.items())
        return (
            f"{self.model} · {self.method} · {_dtype_name(self.dtype)}: {_size(self.total_gb * GB)} ({parts})"
        )

    def explain(self) -> str:
        """The estimate line by line: every component as count x bytes = size, then total and caveats."""
        head = (
            f"{self.model}: {self.method} fine-tuning, {_dtype_name(self.dtype)}, "
            f"batch {self.batch_size} x seq {self.seq_len}\n"
            f"parameters {_num(self.params)} ({self.params:,}); trainable {_num(self.trainable_params)} "
            f"({100 * self.trainable_params / self.params:.3g}%)"
        )
        total = f"total = {self.total_gb:.2f} GB   (GB = 2**30 bytes)"
        return "\n".join([head, *self.lines, total, *(f"note: {n}" for n in self.notes)])

    def __str__(self) -> str:
        return self.summary()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _targets(arch: Arch, lora_targets: str | Sequence[str]) -> list[_Linear]:
    """The Linear layers LoRA adapts: 'attention', 'all-linear', 'default' (peft's per-model choice) or names."""
    layers = _linears(arch)
    if lora_targets == "attention":
        return [lin for lin in layers if lin.kind == "attention"]
    if lora_targets == "all-linear":
        return layers  # like peft, never the output layer (lm_head is not in the table)
    if lora_targets == "default":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        names: Sequence[str] = defaults[arch.family]
    elif isinstance(lora_targets, str):
        raise ValueError(
            f"unknown lora_targets {lora_targets!r}; expected 'attention', 'all-linear', 'default' or a list of "
            f"module names such as {[lin.path.rsplit('.', 1)[-1] for lin in layers]}"
        )
    else:
        names = list(lora_targets)
    # peft matches a name against the end of the module's qualified name
    chosen = [lin for lin in layers if any(lin.path == n or lin.path.endswith("." + n) for n in names)]
    unmatched = [n for n in names if not any(lin.path == n or lin.path.endswith("." + n) for lin in layers)]
    if unmatched or not chosen:
        raise ValueError(
            f"lora target(s) {unmatched or list(names)} match no {arch.family} layer (peft would silently skip "
            f"them); {arch.family} has {[lin.path for lin in layers]}"
        )
    return chosen


def _activation_bytes(
    arch: Arch, b: int, s: int, act_bytes: int, checkpointing: bool, fused: bool
) -> tuple[float, str]:
    """Stored activations of all layers, after Korthikanti et al. 2022 ("Reducing activation recomputation").

    Their per-layer count for a GPT block in 16-bit is sbh(34 + 5as/h) bytes: 18sbh for attention inputs,
    Q/K/V, norms and dropout masks, 16sbh for a 4h MLP, 5as^2b for the attention scores. The MLP term is
    written here for the real intermediate size i (4sbi, 8sbi when gated: gate, up, activation, product),
    so it reduces to theirs for GPT-2. Fused attention kernels (SDPA flash / memory-efficient) never store
    the s x s scores. T5 decoder layers add a cross-attention block. With checkpointing only each layer's
    input (2sbh) is kept, plus one layer's full set while it is recomputed during backward.
    """
    h, a, i = arch.hidden_size, arch.num_heads, arch.intermediate_size
    mlp = 8 if arch.gated_mlp else 4
    scores = 0 if fused else 5 * a * s * s * b
    layer = 18 * s * b * h + mlp * s * b * i + scores  # 18sbh = 11 attention + 4 norms + 3 MLP input/mask
    cross = 13 * s * b * h + scores  # T5 cross-attention: 11sbh + its norm 2sbh
    layers = arch.num_layers + arch.decoder_layers
    full = arch.num_layers * layer + arch.decoder_layers * (layer + cross)
    scale = act_bytes / 2  # the formula counts 16-bit values; fp32 training stores twice as much
    score_txt = "" if fused else " + 5as²b"
    formula = f"(18sbh + {mlp}sbi{score_txt})"
    dec = f" + {arch.decoder_layers} decoder cross-attention blocks" if arch.decoder_layers else ""
    if checkpointing:
        biggest = layer + (cross if arch.decoder_layers else 0)
        nbytes = (layers * 2 * s * b * h + biggest) * scale
        text = f"[{layers} layers x 2sbh kept at checkpoints + 1 layer x {formula} recomputed]"
    else:
        nbytes = full * scale
        text = f"{layers} layers x {formula}{dec}"
    text += f" bytes, s={s} b={b} h={h} i={i} a={a}" + (" x 2 (fp32)" if act_bytes == 4 else "")
    return nbytes, text


_Term = tuple[str, str, float]  # (breakdown component, the arithmetic as text, bytes)


def _full_terms(params: int, dt: torch.dtype, optimizer: str) -> list[_Term]:
    """Every parameter trained: fp32 4 + 4 + state, or mixed precision 2 + 2 + (4 master + state)."""
    state, state_txt = _OPTIMIZERS[optimizer]
    n = _num(params)
    if dt.itemsize == 4:
        return [
            ("weights", f"{n} params x 4 bytes (fp32)", params * 4),
            ("gradients", f"{n} params x 4 bytes (fp32)", params * 4),
            ("optimizer_states", f"{n} params x {state} bytes ({state_txt})", params * state),
        ]
    name = _dtype_name(dt)
    return [
        ("weights", f"{n} params x 2 bytes ({name} working copy)", params * 2),
        ("gradients", f"{n} params x 2 bytes ({name})", params * 2),
        (
            "optimizer_states",
            f"{n} params x {4 + state} bytes (fp32 master copy 4 + {state_txt})",
            params * (4 + state),
        ),
    ]


def _frozen_base_terms(
    arch: Arch, params: int, method: str, dt: torch.dtype, double_quant: bool, kbit_upcast: bool
) -> list[_Term]:
    """The frozen base model under LoRA: in `dtype`, or with its block Linears in int8 / NF4."""
    name = _dtype_name(dt)
    if method == "lora":
        return [
            ("weights", f"{_num(params)} frozen params x {dt.itemsize} bytes ({name})", params * dt.itemsize)
        ]
    # transformers never quantizes lm_head, and keeps T5's `wo` out of quantization too
    quantized = [lin for lin in _linears(arch) if not (arch.family == "t5" and lin.path.endswith(".wo"))]
    qparams = sum(lin.count * lin.fan_in * lin.fan_out for lin in quantized)
    if method == "lora-8bit":
        rows = sum(lin.count * lin.fan_out for lin in quantized)
        terms = [
            ("weights", f"{_num(qparams)} Linear weights x 1 byte (int8)", qparams),
            ("weights", f"+ {_num(rows)} output rows x 4 bytes (fp32 scales)", rows * 4),
        ]
    else:
        # one absmax per block of 64 weights, counted per tensor as bitsandbytes rounds blocks up
        blocks = sum(lin.count * -(-lin.fan_in * lin.fan_out // 64) for lin in quantized)
        terms = [("weights", f"{_num(qparams)} Linear weights x 0.5 byte (nf4)", qparams / 2)]
        if double_quant:  # the absmax re-quantized to 8 bits, with one fp32 absmax per 256 of them
            nested = sum(lin.count * -(-lin.fan_in * lin.fan_out // (64 * 256)) for lin in quantized)
            text = (
                f"+ {_num(blocks)} blocks of 64 x 1 byte + {_num(nested)} x 4 bytes (double-quantized absmax)"
            )
            terms.append(("weights", text, blocks + 4 * nested))
        else:
            terms.append(("weights", f"+ {_num(blocks)} blocks of 64 x 4 bytes (fp32 absmax)", 4 * blocks))
    rest, rest_bytes = params - qparams, 4 if kbit_upcast else dt.itemsize
    why = "fp32 after prepare_model_for_kbit_training" if kbit_upcast else name
    text = f"+ {_num(rest)} other params (embeddings, norms, biases, lm_head) x {rest_bytes} bytes ({why})"
    return [*terms, ("weights", text, rest * rest_bytes)]


def _adapter_terms(targets: list[_Linear], lora_r: int, optimizer: str) -> tuple[int, list[_Term]]:
    """LoRA's trainable A (r x in) and B (out x r) per targeted Linear, with grads and optimizer state in fp32."""
    trainable = sum(lin.count * lora_r * (lin.fan_in + lin.fan_out) for lin in targets)
    state, state_txt = _OPTIMIZERS[optimizer]
    names = ", ".join(sorted({lin.path.rsplit(".", 1)[-1] for lin in targets}))
    n = _num(trainable)
    return trainable, [
        ("weights", f"+ {n} LoRA params (r={lora_r} on {names}) x 4 bytes (fp32)", trainable * 4),
        ("gradients", f"{n} LoRA params x 4 bytes (fp32)", trainable * 4),
        ("optimizer_states", f"{n} LoRA params x {state} bytes ({state_txt})", trainable * state),
    ]


def estimate(
    model_name_or_config: Any,
    *,
    method: str,
    dtype: torch.dtype | str | None = None,
    batch_size: int = 1,
    seq_len: int = 512,
    optimizer: str = "adamw",
    lora_r: int = 16,
    lora_targets: str | Sequence[str] = "attention",
    activation_checkpointing: bool = False,
    fused_attention: bool = False,
    double_quant: bool = False,
    kbit_upcast: bool = False,
) -> Estimate:
    """Estimate training memory before loading anything, showing the arithmetic (`Estimate.explain()`).

    The model is a hub id or logical name (offline lookup in ARCHITECTURES), a local model folder, a
    transformers config or model, or a bare parameter count (then only `full`, without activations).
    `dtype` is the dtype the model is loaded and computes in (None: fp32). Accounting: `full` with a
    16-bit dtype is mixed-precision training as in the ZeRO paper (Rajbhandari et al. 2020): 2 (16-bit
    weights) + 2 (16-bit grads) + 12 (fp32 master weights, Adam m, v) = 16 bytes/param; fp32 training is
    4 + 4 + 8, also 16. LoRA keeps the base frozen in `dtype` and trains r x (in + out) parameters per
    targeted Linear (`lora_targets`: 'attention', 'all-linear', 'default' = peft's choice, or module
    names), in fp32 with fp32 grads and optimizer state. `lora-8bit` stores the block Linears as int8
    plus one fp32 scale per output row, `qlora` as NF4 plus one fp32 absmax per 64 weights (~0.127
    bits/param instead with `double_quant`); embeddings, norms, biases and lm_head stay in `dtype`, or in
    fp32 with `kbit_upcast` (what peft's `prepare_model_for_kbit_training` does). Activations follow
    Korthikanti et al. (see `_activation_bytes`), plus fp32 logits, b x s x vocab x 4 bytes.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of: {', '.join(_OPTIMIZERS)}")
    for label, value in (("batch_size", batch_size), ("seq_len", seq_len), ("lora_r", lora_r)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    dt = _dtype(dtype)
    name, arch, params = _resolve(model_name_or_config)
    notes: list[str] = []
    if method == "full":
        trainable, terms = params, _full_terms(params, dt, optimizer)
        if dt.itemsize == 2:
            notes.append(
                "mixed precision as in the ZeRO paper; HF Trainer's bf16/fp16=True on fp32 weights "
                "(4 weights + 4 grads + 8 AdamW) comes to the same 16 bytes/param"
            )
    elif arch is None:
        raise ValueError(
            f"method {method!r} needs the layer shapes to count adapter and quantized parameters; "
            "pass a model name or config instead of a bare parameter count"
        )
    else:
        terms = _frozen_base_terms(arch, params, method, dt, double_quant, kbit_upcast)
        trainable, adapter = _adapter_terms(_targets(arch, lora_targets), lora_r, optimizer)
        terms += adapter
        if method != "lora":
            notes.append("bitsandbytes quantizes only the blocks' Linear layers, never embeddings or lm_head")

    if arch is None:
        terms.append(
            ("activations", "not estimated: a bare parameter count has no hidden size or layers", 0.0)
        )
        notes.append("activations unknown: the total covers weights, gradients and optimizer states only")
    else:
        act_bytes = 4 if dt.itemsize == 4 else 2
        nbytes, text = _activation_bytes(
            arch, batch_size, seq_len, act_bytes, activation_checkpointing, fused_attention
        )
        logits = batch_size * seq_len * arch.vocab_size * 4
        terms.append(("activations", text, nbytes))
        terms.append(
            (
                "activations",
                f"+ logits {batch_size} x {seq_len} x {arch.vocab_size} vocab x 4 bytes (fp32)",
                logits,
            )
        )
        if not fused_attention:
            notes.append(
                "attention scores counted as stored (eager attention); fused_attention=True drops them"
            )
    notes.append("excludes the CUDA context (~0.3-0.5 GB) and allocator fragmentation")

    breakdown = dict.fromkeys(("weights", "gradients", "optimizer_states", "activations"), 0.0)
    lines = []
    for component, text, nbytes in terms:
        breakdown[component] += nbytes / GB
        label = "" if text.startswith("+") else component + ":"
        lines.append(f"{label:<18}{text} = {_size(nbytes)}")
    return Estimate(
        model=name,
        method=method,
        dtype=dt,
        params=params,
        trainable_params=trainable,
        batch_size=batch_size,
        seq_len=seq_len,
        breakdown=breakdown,
        total_gb=sum(breakdown.values()),
        lines=lines,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# Capping, freeing, surviving
# ---------------------------------------------------------------------------------------------


def limit(gb: float) -> bool:
    """Cap this process's CUDA memory at `gb` GB so a bigger GPU behaves like a `gb` card.

    Uses `torch.cuda.set_per_process_memory_fraction`, which caps torch's allocator (the CUDA context is
    outside it, so a real card of that size has a little less room). Returns True when the cap was set;
    False, with a printed explanation, on CPU or when the card is not bigger than `gb`.
    """
    if not gb > 0:
        raise ValueError(f"gb must be a positive number of GB, got {gb!r}")
    if not torch.cuda.is_available():
        print(f"memory.limit({gb:g}): no CUDA GPU, nothing to cap (on CPU, TensorBudget emulates a budget)")
        return False
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    if gb * GB >= total:
        print(f"memory.limit({gb:g}): this GPU has only {total / GB:.1f} GB, no cap needed")
        return False
    torch.cuda.set_per_process_memory_fraction(gb * GB / total)
    log.info("capped CUDA memory at %.1f of %.1f GB", gb, total / GB)
    return True


def free(*objects: Any) -> None:
    """Release memory between experiments: empty the objects given, then collect garbage and the CUDA cache.

    Python cannot delete the caller's variables, so `del model, trainer` first and call `free()`. Objects
    passed in are emptied in place and are unusable afterwards: a module's parameters, buffers and
    gradients become empty tensors, an optimizer's state is cleared, anything with a `.model` or
    `.optimizer` (a Trainer) has those emptied. This frees their memory even when something else still
    holds a reference (a Trainer keeps the model, a traceback keeps a frame's tensors).
    """
    for obj in objects:
        if obj is None:
            continue
        if isinstance(obj, torch.nn.Module):
            for tensor in [*obj.parameters(), *obj.buffers()]:
                tensor.grad = None
                tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
        elif isinstance(obj, torch.optim.Optimizer):
            obj.state.clear()
        elif isinstance(obj, torch.Tensor):
            obj.grad = None
            obj.data = torch.empty(0, dtype=obj.dtype, device=obj.device)
        elif hasattr(obj, "model") or hasattr(obj, "optimizer"):
            free(getattr(obj, "model", None), getattr(obj, "optimizer", None))
        else:
            raise TypeError(
                f"free() empties modules, optimizers, tensors and trainers; got {type(obj).__name__} "
                "(for anything else, `del` the name and call free() with no arguments)"
            )
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class SimulatedOutOfMemory(torch.OutOfMemoryError):
    """Raised by `TensorBudget` when training holds more tensor bytes than its budget (an OOM on CPU)."""


def tensor_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes held right now by a model's parameters, their gradients and the optimizer's state tensors.

    Quantized bitsandbytes parameters count their real packed storage (uint8 / int8) plus their
    quantization constants. Optimizer states exist only after the first step. Activations are not
    counted: they live only inside a step.
    """
    weights = gradients = 0
    for p in model.parameters():  # parameters() yields tied weights once
        weights += p.numel() * p.element_size()
        quant_state = getattr(p, "quant_state", None)  # bnb Params4bit: absmax (and nested absmax)
        for part in (quant_state, getattr(quant_state, "state2", None)):
            absmax = getattr(part, "absmax", None)
            if isinstance(absmax, torch.Tensor):
                weights += absmax.numel() * absmax.element_size()
        scb = getattr(p, "SCB", None)  # bnb Int8Params: one scale per output row
        if isinstance(scb, torch.Tensor):
            weights += scb.numel() * scb.element_size()
        if p.grad is not None:
            gradients += p.grad.numel() * p.grad.element_size()
    states = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            states += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return {"weights": weights, "gradients": gradients, "optimizer_states": states}


class TensorBudget(TrainerCallback):
    """A Trainer callback that raises `SimulatedOutOfMemory` when training tensors exceed `budget_mb`.

    There is no way to cap CPU memory for one process the way `limit()` caps a GPU, so the smoke profile
    emulates a small card by counting what training actually holds (`tensor_bytes`: weights, gradients,
    optimizer states) at the start, right after each optimizer step (when gradients and fresh optimizer
    states coexist) and at each step end. `last` and `peak_mb` keep what it saw.
    """

    def __init__(self, budget_mb: float) -> None:
        if not budget_mb > 0:
            raise ValueError(f"budget_mb must be a positive number of MB, got {budget_mb!r}")
        self.budget_mb = float(budget_mb)
        self.last: dict[str, int] = {}
        self.peak_mb = 0.0

    def check(
        self, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None = None
    ) -> dict[str, int]:
        """Measure now; raise `SimulatedOutOfMemory` if over budget."""
        if model is None:
            return {}
        self.last = tensor_bytes(model, optimizer)
        held = sum(self.last.values()) / MB
        self.peak_mb = max(self.peak_mb, held)
        if held > self.budget_mb:
            parts = ", ".join(f"{k} {v / MB:,.1f} MB" for k, v in self.last.items())
            raise SimulatedOutOfMemory(
                f"tried to hold {held:,.1f} MB of tensors under a {self.budget_mb:,.1f} MB budget ({parts})"
            )
        return self.last

    def on_step_end(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """Trainer event: check the budget (also bound to `on_train_begin` and `on_optimizer_step`)."""
        self.check(model, optimizer)

    on_train_begin = on_step_end
    # Trainer zeroes the gradients before `on_step_end`; right after the optimizer step they and the
    # optimizer states are both alive, which is the most training ever holds between forward passes.
    on_optimizer_step = on_step_end


@dataclass
class Attempt(Generic[T]):
    """The outcome of `attempt()`: the result, or the out-of-memory message, next to peak and estimate."""

    ok: bool
    result: T | None
    error: str | None
    peak_mb: float
    kind: str
    estimate: Estimate | None = None
    label: str = ""
    baseline_mb: float = 0.0
    reserved_mb: float | None = None
    seconds: float = 0.0

    def report(self) -> str:
        """What happened, the measured peak (and what kind of memory it is) and the estimate beside it."""
        name = f"[{self.label}] " if self.label else ""
        what = "GPU tensors, torch allocator" if self.kind == "cuda" else "process RSS, CPU RAM"
        status = (
            f"finished in {self.seconds:.1f} s" if self.ok else f"OUT OF MEMORY after {self.seconds:.1f} s"
        )
        lines = [f"{name}{status}"]
        if not self.ok:
            lines.append(f"  error: {self.error}")
        lines.append(f"  peak measured: {self.peak_mb:,.0f} MB ({what}; {self.baseline_mb:,.0f} MB at entry)")
        if self.estimate is not None:
            est = self.estimate
            lines.append(f"  estimate: {est.summary()}")
            if self.ok and self.kind == "cuda" and est.total_gb > 0:
                lines.append(f"  measured / estimated = {self.peak_mb / (est.total_gb * 1024):.2f}")
        return "\n".join(lines)


def attempt(fn: Callable[[], T], *, estimate: Estimate | None = None, label: str = "") -> Attempt[T]:
    """Run `fn()` under `track()`; an out-of-memory error becomes an `Attempt(ok=False)` instead of a crash.

    Catches `torch.OutOfMemoryError` (CUDA OOM) and `SimulatedOutOfMemory`, keeps the first line of the
    message, frees memory (gc + CUDA cache) and returns; any other exception propagates unchanged.
    """
    start = time.perf_counter()
    error: str | None = None
    result: T | None = None
    with track() as peak:
        try:
            result = fn()
        except torch.OutOfMemoryError as exc:  # SimulatedOutOfMemory is a subclass
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if error is not None:
        free()  # outside the except block, so the traceback and the frames it pins are already released
    return Attempt(
        ok=error is None,
        result=result,
        error=error,
        peak_mb=peak.peak_mb,
        kind=peak.kind,
        estimate=estimate,
        label=label,
        baseline_mb=peak.baseline_mb,
        reserved_mb=peak.reserved_mb,
        seconds=time.perf_counter() - start,
    )


def _held_mb(est: Estimate) -> float:
    """What TensorBudget can see of an estimate: weights, gradients and optimizer states (no activations)."""
    b = est.breakdown
    return (b["weights"] + b["gradients"] + b["optimizer_states"]) * 1024


def emulate_card(
    gb: float,
    *,
    model_name: str,
    profile: Any,
    fits: str = "lora-8bit",
    does_not_fit: str = "full",
) -> list[TrainerCallback]:
    """Make training behave as on a `gb` GB card; returns the Trainer callbacks that enforce it (maybe none).

    Under `full` this is `limit(gb)`: torch's CUDA allocator is capped and a real `OutOfMemoryError`
    ends a run that needs more. Under `smoke` the models are tiny stand-ins that would fit any card, so
    the budget is *scaled* to the stand-in: it is placed at the geometric mean of what the stand-in
    holds (weights, gradients, optimizer states, by `estimate`) for `does_not_fit` and for `fits`, the
    same way 16 GB sits between Llama-2-7B's full fine-tune and its 8-bit LoRA. A `TensorBudget`
    callback then measures the tensors training really holds and refuses when they exceed it.
    """
    if not profile.is_smoke:
        limit(gb)
        return []
    stand_in = profile.model(model_name)
    low = _held_mb(estimate(stand_in, method=fits))
    high = _held_mb(estimate(stand_in, method=does_not_fit))
    budget = (low * high) ** 0.5
    print(
        f"scaled demonstration ({profile.name} profile): a {gb:g} GB card becomes a {budget:.2f} MB tensor "
        f"budget for the stand-in, between its {fits} need ({low:.2f} MB) and its {does_not_fit} need "
        f"({high:.2f} MB); TensorBudget measures what training holds and refuses above it"
    )
    return [TensorBudget(budget)]
