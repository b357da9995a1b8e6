"""Fine-tuning: full, LoRA, LoRA on an 8-bit base and QLoRA of causal LMs with trl, and seq2seq (T5).

`finetune()` loads a model through the profile (a hub id under `full`, a tiny stand-in folder under
`smoke`, both via plain `from_pretrained`), turns a dialogue/summary dataset into prompt/completion
pairs (so trl trains on the summary only) or whole texts, and trains it with trl's `SFTTrainer`. The
settings come in layers, each overriding the one before: the source document's values
(`DOCUMENT_SETTINGS`), then, with `fast=True`, what a current GPU makes worthwhile (mixed precision,
sdpa attention, length-grouped batches, paged 8-bit optimizers, activation checkpointing for 7B
models), then the profile's (a few short steps under `smoke`), then your keyword overrides, which are
`SFTConfig` fields.
`fast=False` is the document's own setting, kept so a benchmark can measure what the new defaults buy.
Every run returns a `FinetuneResult` with the trained model, wall time, peak memory and loss history.
`finetune_seq2seq()` is the FLAN-T5 path; `load_adapter()`, `merge()` and `compare_logits()` cover
what happens after training.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bitsandbytes as bnb
import torch
from datasets import Dataset, DatasetDict
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerState,
)
from transformers.pytorch_utils import Conv1D
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from tutorlib import memory, paths, templates
from tutorlib.profile import MODELS, Profile, canonical, family

METHODS = ("full", "lora", "lora-8bit", "qlora")
QUANTIZED = frozenset({"lora-8bit", "qlora"})
SEQ2SEQ_METHODS = ("full", "lora")

# Families whose real models have ~7B parameters: without activation checkpointing their activations
# alone outgrow a 16-24 GB card at the documents' sequence lengths.
_LARGE_FAMILIES = frozenset({"llama", "falcon"})

_BNB_LINEARS = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)

_LOGICAL = {hub_id: name for name, hub_id in MODELS.items()}


# ---------------------------------------------------------------------------------------------
# What the documents used
# ---------------------------------------------------------------------------------------------


def _lora(
    r: int, alpha: int, dropout: float, targets: list[str] | None, task: str = "CAUSAL_LM"
) -> LoraConfig:
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type=task, target_modules=targets
    )


# A factory per document, because trl and peft mutate the LoraConfig they are given.
LORA_PRESETS: Mapping[str, Callable[[], LoraConfig]] = MappingProxyType(
    {
        # 000 sets no target_modules, so peft's per-architecture default applies (GPT-2: c_attn; Llama: q/v).
        "distilgpt2": lambda: _lora(16, 32, 0.05, None),
        "llama-2-7b": lambda: _lora(16, 32, 0.05, None),
        "falcon-7b": lambda: _lora(
            16, 32, 0.1, ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
        ),
        # 003's names for native (not remote-code) Phi; the 2023 Wqkv/out_proj names match nothing today.
        "phi-2": lambda: _lora(32, 32, 0.05, ["q_proj", "k_proj", "v_proj", "dense"]),
        "flan-t5-base": lambda: _lora(32, 32, 0.05, ["q", "v"], TaskType.SEQ_2_SEQ_LM),
    }
)

# What the 2023 TrainingArguments / SFTTrainer did when a document left a field unset. Today's SFTConfig
# defaults differ (bf16=True, activation checkpointing on, lr 2e-5), so they are spelled out.
_DEFAULTS_2023: Mapping[str, Any] = MappingProxyType(
    {
        "learning_rate": 5e-5,
        "per_device_train_batch_size": 8,
        "optim": "adamw_torch",
        "lr_scheduler_type": "linear",
        "bf16": False,
        "fp16": False,
        "activation_checkpointing": False,
        "packing": False,
        "max_length": 1024,  # SFTTrainer's max_seq_length default: min(model_max_length, 1024)
    }
)

_TWEETSUMM = {**_DEFAULTS_2023, "learning_rate": 2e-4, "weight_decay": 0.01, "num_train_epochs": 5}

DOCUMENT_SETTINGS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "distilgpt2": MappingProxyType(_TWEETSUMM),
        "llama-2-7b": MappingProxyType({**_TWEETSUMM, "num_train_epochs": 1, "max_length": 1024}),
        "falcon-7b": MappingProxyType(
            {
                **_DEFAULTS_2023,
                "per_device_train_batch_size": 32,
                "gradient_accumulation_steps": 4,
                "activation_checkpointing": False,
                "optim": "paged_adamw_32bit",
                "save_steps": 20,
                "logging_steps": 20,
                "learning_rate": 2e-4,
                "fp16": True,
                "max_grad_norm": 0.1,
                "num_train_epochs": 5,
                "warmup_steps": 0.01,  # the document's warmup_ratio=0.01 (a float below 1 is a ratio now)
                "train_sampling_strategy": "group_by_length",  # the document's group_by_length=True
                "lr_scheduler_type": "cosine",
                "seed": 42,
                "max_length": 512,
            }
        ),
        "phi-2": MappingProxyType(
            {
                **_DEFAULTS_2023,
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
            }
        ),
        # 001 is a demo: both runs stop after max_steps=1. Override max_steps to train for real.
        "flan-t5-base": MappingProxyType(
            {
                "learning_rate": 1e-5,
                "num_train_epochs": 1,
                "weight_decay": 0.01,
                "logging_steps": 1,
                "max_steps": 1,
            }
        ),
        "flan-t5-base-lora": MappingProxyType(
            {
                "auto_find_batch_size": True,
                "learning_rate": 1e-3,
                "num_train_epochs": 1,
                "logging_steps": 1,
                "max_steps": 1,
            }
        ),
    }
)

# QLoRA quantization per document: (double quantization, compute dtype). 000 and 003 turn double
# quantization off, 002 on; the compute dtype is the document's (used with fast=False only).
_QLORA_DOCUMENTS: Mapping[str, tuple[bool, torch.dtype]] = MappingProxyType(
    {
        "distilgpt2": (False, torch.bfloat16),
        "llama-2-7b": (False, torch.bfloat16),
        "falcon-7b": (True, torch.float16),
        "phi-2": (False, torch.float16),
    }
)

# Old names that now raise or are silently ignored, with what replaced them (porting notes §1-2).
_RENAMED: Mapping[str, str] = MappingProxyType(
    {
        "evaluation_strategy": "eval_strategy",
        "max_seq_length": "max_length",
        "group_by_length": 'train_sampling_strategy="group_by_length"',
        "warmup_ratio": "warmup_steps (a float below 1 is read as a ratio)",
        "no_cuda": "use_cpu",
        "logging_dir": "the TENSORBOARD_LOGGING_DIR environment variable",
        "tokenizer": "processing_class (an argument of the trainer, not of the config)",
        "overwrite_output_dir": "nothing: it was removed",
        "torch_dtype": 'model_init_kwargs={"dtype": ...}',
    }
)

# SFTConfig values a results record and the benchmark report.
_REPORTED = (
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "optim",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
    "bf16",
    "fp16",
    "tf32",
    "activation_checkpointing",
    "packing",
    "packing_strategy",
    "padding_free",
    "max_length",
    "train_sampling_strategy",
    "completion_only_loss",
    "auto_find_batch_size",
    "seed",
)


def default_preset(model_name: str) -> str:
    """The document preset of a model: its logical name (`distilgpt2`, `llama-2-7b`, `falcon-7b`, ...)."""
    return _LOGICAL[canonical(model_name)]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _check_method(method: str, allowed: Sequence[str] = METHODS) -> None:
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(allowed)}")


def _device_map(profile: Profile) -> str | dict[str, int]:
    # {"": 0} raises on a machine without CUDA, and "auto" may silently offload layers of a quantized
    # model to CPU or disk, which cannot be trained; so: everything on the one device there is.
    return {"": torch.cuda.current_device()} if profile.device == "cuda" else "cpu"


def quantization_config(
    method: str, model_name: str, *, profile: Profile, preset: str | None = None, fast: bool = True
) -> BitsAndBytesConfig | None:
    """The bitsandbytes config of a method: LLM.int8 for `lora-8bit`, NF4 for `qlora`, None otherwise.

    QLoRA follows the preset's document on double quantization; the compute dtype is the profile's
    (bf16 on Ampere and newer, fp16 on V100/T4, fp32 on CPU) with `fast=True`, and the document's with
    `fast=False`. bitsandbytes computes in any of them on CPU as well.
    """
    _check_method(method)
    if method == "lora-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if method != "qlora":
        return None
    double_quant, document_dtype = _QLORA_DOCUMENTS.get(preset or default_preset(model_name), (False, None))
    compute = profile.dtype_for(model_name) if fast or document_dtype is None else document_dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a model folder or hub id; pad = eos when it has none (GPT-2, Llama, Falcon, Phi)."""
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model_name: str,
    *,
    profile: Profile,
    method: str = "full",
    quantization: BitsAndBytesConfig | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer the way training and generation need them.

    The path comes from `profile.model(name)`. `lora-8bit`/`qlora` load a quantized base (the config from
    `quantization_config` unless one is given); the weights otherwise come in `profile.dtype_for(name)`.
    Everything goes to the single device there is (`cpu`, or `{"": 0}` on a GPU). Extra keyword arguments
    go to `from_pretrained` (`dtype=`, `attn_implementation=`, `device_map=` ...).
    """
    _check_method(method)
    if quantization is None and method in QUANTIZED:
        quantization = quantization_config(method, model_name, profile=profile)
    path = profile.model(model_name)
    kwargs: dict[str, Any] = {"dtype": profile.dtype_for(model_name), "device_map": _device_map(profile)}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    kwargs.update(from_pretrained_kwargs)
    auto = AutoModelForSeq2SeqLM if family(model_name) == "t5" else AutoModelForCausalLM
    patch = (
        _plain_falcon_linears()
        if quantization is not None and family(model_name) == "falcon"
        else nullcontext()
    )
    with patch:
        model = auto.from_pretrained(path, **kwargs)
    if quantization is not None and not any(isinstance(m, _BNB_LINEARS) for m in model.modules()):
        raise RuntimeError(f"{model_name}: {method} asked for a quantized base, but no layer was quantized")
    if quantization is not None and profile.device == "cpu":
        _no_cpu_4bit_repacking(model)
    return model, load_tokenizer(path)


@contextmanager
def _plain_falcon_linears() -> Iterator[None]:
    """Build Falcon's projections as plain nn.Linear while loading, so bitsandbytes quantizes them.

    transformers 5.23 replaces only modules whose type is exactly nn.Linear; Falcon makes its four
    projections from the subclass FalconLinear (the same x @ W.T + b), so a 4- or 8-bit load of
    Falcon would silently keep every block in 16 bits.
    """
    from transformers.models.falcon import modeling_falcon

    original = modeling_falcon.FalconLinear
    modeling_falcon.FalconLinear = torch.nn.Linear
    try:
        yield
    finally:
        modeling_falcon.FalconLinear = original


def find_target_modules(model: torch.nn.Module) -> list[str]:
    """Names of the layers LoRA can adapt: every Linear, GPT-2 Conv1D and bitsandbytes 4/8-bit Linear.

    Returns the last component of each module name, de-duplicated and sorted (what `target_modules`
    takes), leaving out the output head (`lm_head` / `embed_out`), which trl's fused head cannot adapt.
    Layers already wrapped by peft count under their own name, never as `base_layer` or `lora_A`.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        # bitsandbytes' Linear4bit and Linear8bitLt subclass nn.Linear, so one isinstance covers them.
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is head:
            continue
        parts = name.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue
        if parts[-1] == "base_layer":
            parts = parts[:-1]
        if parts[-1] not in ("lm_head", "embed_out"):
            names.add(parts[-1])
    return sorted(names)


def _no_cpu_4bit_repacking(model: torch.nn.Module) -> None:
    # On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights into an inference layout the first
    # time a layer runs in eval mode and never unpacks them: later training steps crash (in-place bias
    # error, "N must be divisible by block_n"), and so does inference for layer widths that are not a
    # multiple of the kernel's block (the stand-ins' 64). The plain 4-bit kernel has neither problem.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a bitsandbytes 4-bit tensor stores two weights per byte."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n *= 2 * p.element_size()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _check_fields(cls: type, values: Mapping[str, Any], extra: Sequence[str] = ()) -> None:
    names = [f.name for f in dataclasses.fields(cls) if f.init] + list(extra)
    for key in values:
        if key in names:
            continue
        if key in _RENAMED:
            hint = f"it is now {_RENAMED[key]}"
        else:
            close = difflib.get_close_matches(key, names, n=3)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else "see the trl/transformers docs for the fields"
            )
        raise TypeError(f"{key!r} is not a field of {cls.__name__}: {hint}")


_QUANTIZED_OPTIM = {True: "paged_adamw_8bit", False: "adamw_bnb_8bit"}


def _fast_settings(fam: str, method: str, profile: Profile) -> dict[str, Any]:
    """What a current GPU makes worthwhile, over the document's values (each one can be overridden)."""
    values: dict[str, Any] = {
        # No packing: trl's packing ("bfd") also turns on padding-free batches, which flatten the whole
        # batch into ONE sequence. That is exact (position_ids restart per example and transformers
        # builds a block-diagonal mask, so examples never see each other and completion masks survive),
        # but without FlashAttention's variable-length kernel the mask is (batch x length)^2: attention
        # cost and memory grow with the square of the batch. benchmarks/README.md has the numbers.
        # Batches of similar length (group_by_length, set in _setup) remove most padding instead.
        "packing": False,
        # Paged optimizer states can spill to CPU RAM when a quantized 7B run nears the card's limit;
        # without a GPU there is nothing to page from, so the same 8-bit AdamW runs unpaged.
        "optim": _QUANTIZED_OPTIM[profile.device == "cuda"] if method in QUANTIZED else "adamw_torch_fused",
        "activation_checkpointing": fam in _LARGE_FAMILIES,
    }
    if profile.device == "cuda":
        bf16 = profile.dtype == torch.bfloat16
        # fp16 only where bf16 is missing (V100, T4), never for T5, whose activations overflow in fp16.
        values.update(bf16=bf16, fp16=not bf16 and fam != "t5", tf32=True if bf16 else None)
    return values


def _weights_dtype(method: str, model_name: str, profile: Profile, fast: bool) -> torch.dtype:
    # Full fine-tuning keeps fp32 master weights (mixed precision autocasts the matmuls); a frozen
    # LoRA base can sit in 16 bits. The documents loaded everything in fp32.
    if not fast or method == "full":
        return torch.float32
    return profile.dtype_for(model_name)


def _layered(
    *,
    cls: type,
    base: Any | None,
    document: Mapping[str, Any],
    fast_values: Mapping[str, Any],
    profile: Profile,
    overrides: dict[str, Any],
    has_eval: bool,
    output_dir: str | Path,
    extra_fields: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stack document < fast/device < profile < overrides; return (config values, explicit overrides)."""
    if "gradient_checkpointing" in overrides:
        # Still accepted by transformers, but a copy of a config whose new name is already set ignores it.
        warnings.warn(
            "gradient_checkpointing is deprecated; use activation_checkpointing", FutureWarning, stacklevel=3
        )
        overrides["activation_checkpointing"] = overrides.pop("gradient_checkpointing")
    _check_fields(cls, overrides, extra_fields)
    values: dict[str, Any] = {}
    if base is None:
        values.update(document)
        values.update(fast_values)
        if profile.device == "cpu":
            # SFTConfig's bf16=True default raises without a GPU, and fp16 is silently ignored on CPU.
            values.update(use_cpu=True, bf16=False, fp16=False)
        values.setdefault("activation_checkpointing", False)
        values["report_to"] = "none"
        values["save_total_limit"] = 2  # enough to resume; a full 7B checkpoint with optimizer is ~80 GB
        # A progress bar, not a printed dict per log step: the default follows transformers' log level,
        # which profile.quiet_libraries() raises to keep notebooks readable.
        values["disable_tqdm"] = False
    values = profile.train_args(**values)
    mik = {**values.get("model_init_kwargs", {}), **overrides.pop("model_init_kwargs", {})}
    values.update(overrides)
    if mik:
        values["model_init_kwargs"] = mik
    if "eval_strategy" not in overrides:
        steps = values.get("eval_steps") if base is None else values.get("eval_steps", base.eval_steps)
        values["eval_strategy"] = ("steps" if steps else "epoch") if has_eval else "no"
    if "save_steps" in overrides and "save_strategy" not in overrides:
        values["save_strategy"] = "steps"
    values["output_dir"] = str(output_dir)
    return values, overrides


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value).removeprefix("torch.")


def _settings(args: Any, **extra: Any) -> dict[str, Any]:
    values = {k: getattr(args, k) for k in _REPORTED if hasattr(args, k)}
    return _jsonable({**values, **extra})


def _default_output_dir(model_name: str, method: str) -> Path:
    slug = canonical(model_name).split("/")[-1].lower()
    return paths.runs_dir() / "train" / f"{slug}-{method}"


def _template(template: templates.Template | str) -> templates.Template:
    if isinstance(template, templates.Template):
        return template
    if template not in templates.TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of: {', '.join(templates.TEMPLATES)}")
    return templates.TEMPLATES[template]


def _splits(dataset: Dataset | DatasetDict) -> tuple[Dataset, Dataset | None]:
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise ValueError(f"dataset has no 'train' split; found: {', '.join(dataset) or 'none'}")
        return dataset["train"], dataset.get("validation")
    if isinstance(dataset, Dataset):
        return dataset, None
    raise TypeError(f"expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")


def _causal_data(ds: Dataset, template: templates.Template, completion_only: bool) -> Dataset:
    """dialogue/summary rows -> prompt/completion (loss on the summary) or text (loss on everything)."""
    cols = set(ds.column_names)
    if "dialogue" in cols:
        convert = templates.to_prompt_completion if completion_only else templates.to_text
        return convert(ds, template)
    if completion_only and not {"prompt", "completion"} <= cols:
        # trl silently trains on the whole text when asked for completion-only loss on a text column.
        raise ValueError(
            f"completion_only=True needs dialogue/summary or prompt/completion columns; found {sorted(cols)}"
        )
    if not completion_only and "text" not in cols:
        raise ValueError(
            f"completion_only=False needs dialogue/summary or text columns; found {sorted(cols)}"
        )
    return ds


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """One training run: the model, its tokenizer, wall time, peak memory, parameter counts and loss log.

    `peak_memory_mb` is CUDA allocator memory (`memory_kind="cuda"`) or process RSS on CPU
    (`"cpu_rss"`), two different quantities; `memory_baseline_mb` is the same reading when training
    began. `history` is trainer.state.log_history of this run (after a resume, only the steps trained
    now). `settings` holds the values that shaped it, JSON-ready for a results record.
    """

    model: Any
    tokenizer: PreTrainedTokenizerBase
    seconds: float
    peak_memory_mb: float
    memory_kind: str
    memory_baseline_mb: float
    trainable_params: int
    total_params: int
    history: list[dict[str, Any]]
    output_dir: Path
    method: str
    model_name: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        """The logged training losses, in step order."""
        return [h["loss"] for h in self.history if "loss" in h]

    @property
    def initial_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    def save_adapter(self, path: str | Path) -> Path:
        """Write the LoRA adapter and the tokenizer to `path` (a few MB; the base model is not copied)."""
        if not isinstance(self.model, PeftModel):
            raise ValueError(
                f"method {self.method!r} trained no adapter; save the model with model.save_pretrained()"
            )
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path


def _setup(
    model_name: str,
    dataset: Dataset | DatasetDict,
    *,
    method: str,
    template: templates.Template | str,
    profile: Profile,
    lora: LoraConfig | None,
    sft_config: SFTConfig | None,
    quantization: BitsAndBytesConfig | None,
    completion_only: bool,
    fast: bool,
    preset: str | None,
    output_dir: str | Path | None,
    callbacks: list | None,
    overrides: dict[str, Any],
) -> tuple[SFTTrainer, dict[str, Any]]:
    _check_method(method)
    fam = family(model_name)
    if fam == "t5":
        raise ValueError(f"{model_name!r} is an encoder-decoder model; use finetune_seq2seq()")
    tmpl = _template(template)
    if tmpl.seq2seq:
        raise ValueError(f"template {tmpl.name!r} is a seq2seq format; use finetune_seq2seq()")
    preset = preset or default_preset(model_name)
    if preset not in DOCUMENT_SETTINGS:
        raise ValueError(f"unknown preset {preset!r}; expected one of: {', '.join(DOCUMENT_SETTINGS)}")
    if method == "full" and lora is not None:
        raise ValueError("method 'full' trains every weight; pass lora= only with lora, lora-8bit or qlora")
    if quantization is not None and method not in QUANTIZED:
        raise ValueError(f"quantization= needs method 'lora-8bit' or 'qlora', not {method!r}")

    train_raw, eval_raw = _splits(dataset)
    train_ds = _causal_data(train_raw, tmpl, completion_only)
    eval_ds = _causal_data(eval_raw, tmpl, completion_only) if eval_raw is not None else None

    model_kwargs: dict[str, Any] = {
        "dtype": _weights_dtype(method, model_name, profile, fast),
        # 2023's libraries ran these models with eager attention; sdpa is the fused kernel.
        "attn_implementation": "sdpa" if fast else "eager",
    }
    fast_values = _fast_settings(fam, method, profile) if fast else {}
    values, explicit = _layered(
        cls=SFTConfig,
        base=sft_config,
        document={**DOCUMENT_SETTINGS[preset], "model_init_kwargs": model_kwargs},
        fast_values=fast_values,
        profile=profile,
        overrides=dict(overrides),
        has_eval=eval_ds is not None,
        output_dir=output_dir
        or (sft_config.output_dir if sft_config else _default_output_dir(model_name, method)),
    )
    if fast and sft_config is None and "train_sampling_strategy" not in explicit:
        # Unpacked batches of similar length pad little; packed rows all have the same length already.
        values["train_sampling_strategy"] = "random" if values.get("packing") else "group_by_length"
    if "completion_only_loss" not in explicit and (
        sft_config is None or sft_config.completion_only_loss is None
    ):
        values["completion_only_loss"] = completion_only
    # The model is loaded here, not by trl, so that a quantized base gets prepare_model_for_kbit_training.
    given = (sft_config.model_init_kwargs or {}) if sft_config is not None else {}
    load_kwargs = {**model_kwargs, **given, **(values.pop("model_init_kwargs", None) or {})}
    if sft_config is not None:
        values["model_init_kwargs"] = None
    config = dataclasses.replace(sft_config, **values) if sft_config is not None else SFTConfig(**values)

    quantization = quantization or quantization_config(
        method, model_name, profile=profile, preset=preset, fast=fast
    )
    model, tok = load_model(
        model_name, profile=profile, method=method, quantization=quantization, **load_kwargs
    )
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    if quantization is not None:
        # Casts norms and embeddings to fp32 for stable training; the Trainer turns on checkpointing itself.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = None
    if method != "full":
        peft_config = copy.deepcopy(lora) if lora is not None else LORA_PRESETS[preset]()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    settings = _settings(
        config,
        method=method,
        preset=preset,
        fast=fast,
        template=tmpl.name,
        model_path=profile.model(model_name),
        model_init_kwargs=load_kwargs,
        lora=peft_config.to_dict() if peft_config is not None else None,
        quantization=quantization.to_dict() if quantization is not None else None,
    )
    return trainer, settings


def build_trainer(
    model_name: str,
    dataset: Dataset | DatasetDict,
    *,
    method: str,
    template: templates.Template | str,
    profile: Profile,
    lora: LoraConfig | None = None,
    sft_config: SFTConfig | None = None,
    quantization: BitsAndBytesConfig | None = None,
    completion_only: bool = True,
    fast: bool = True,
    preset: str | None = None,
    output_dir: str | Path | None = None,
    callbacks: list | None = None,
    **overrides: Any,
) -> SFTTrainer:
    """The configured `SFTTrainer` that `finetune()` would run, untrained, to inspect its data and masks.

    `trainer.train_dataset` holds the tokenized rows with `labels` (-100 where no loss is taken) and
    `trainer.data_collator` builds the batches. Arguments as for `finetune()`.
    """
    trainer, _ = _setup(
        model_name,
        dataset,
        method=method,
        template=template,
        profile=profile,
        lora=lora,
        sft_config=sft_config,
        quantization=quantization,
        completion_only=completion_only,
        fast=fast,
        preset=preset,
        output_dir=output_dir,
        callbacks=callbacks,
        overrides=overrides,
    )
    return trainer


def _run(
    trainer: Trainer, *, resume: bool | str | Path, model_name: str, method: str, settings: dict[str, Any]
) -> FinetuneResult:
    """Train (resuming if asked) under memory.track(), then package the result."""
    output_dir = Path(trainer.args.output_dir)
    checkpoint = None
    if resume:
        checkpoint = str(resume) if not isinstance(resume, bool) else get_last_checkpoint(str(output_dir))
        if checkpoint is None or not Path(checkpoint).is_dir():
            raise FileNotFoundError(f"resume={resume!r}: no checkpoint-* folder found in {output_dir}")
    start_step = (
        TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json")).global_step
        if checkpoint
        else 0
    )
    with memory.track() as peak:
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.perf_counter() - start
    model = trainer.model
    model.config.use_cache = True  # back on for generation, which it speeds up many times
    model.eval()
    trainable, total = count_parameters(model)
    return FinetuneResult(
        model=model,
        tokenizer=trainer.processing_class,
        seconds=seconds,
        peak_memory_mb=peak.peak_mb,
        memory_kind=peak.kind,
        memory_baseline_mb=peak.baseline_mb,
        trainable_params=trainable,
        total_params=total,
        history=[h for h in trainer.state.log_history if h.get("step", 0) > start_step],
        output_dir=output_dir,
        method=method,
        model_name=model_name,
        settings=settings,
    )


def finetune(
    model_name: str,
    dataset: Dataset | DatasetDict,
    *,
    method: str,
    template: templates.Template | str,
    profile: Profile,
    lora: LoraConfig | None = None,
    sft_config: SFTConfig | None = None,
    quantization: BitsAndBytesConfig | None = None,
    completion_only: bool = True,
    fast: bool = True,
    preset: str | None = None,
    output_dir: str | Path | None = None,
    resume: bool | str | Path = False,
    callbacks: list | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune a causal LM on dialogue/summary data: `full`, `lora`, `lora-8bit` or `qlora`.

    `dataset` is a DatasetDict (train, and validation for evaluation) or a Dataset with `dialogue` and
    `summary` columns, turned into prompt/completion pairs by `template` (loss on the summary only) or,
    with `completion_only=False`, into whole texts. `preset` names the document whose settings and LoRA
    config apply (default: the model's own). `lora`, `quantization` and `sft_config` replace the preset's
    objects; keyword overrides are SFTConfig fields and win over everything (an unknown name raises a
    TypeError naming the closest fields). `resume=True` continues from the last checkpoint in
    `output_dir` (default runs/train/<model>-<method>), a path from that checkpoint.
    """
    trainer, settings = _setup(
        model_name,
        dataset,
        method=method,
        template=template,
        profile=profile,
        lora=lora,
        sft_config=sft_config,
        quantization=quantization,
        completion_only=completion_only,
        fast=fast,
        preset=preset,
        output_dir=output_dir,
        callbacks=callbacks,
        overrides=overrides,
    )
    return _run(trainer, resume=resume, model_name=model_name, method=method, settings=settings)


def finetune_seq2seq(
    model_name: str,
    dataset: Dataset | DatasetDict,
    *,
    method: str,
    template: templates.Template | str,
    profile: Profile,
    lora: LoraConfig | None = None,
    args: Seq2SeqTrainingArguments | None = None,
    fast: bool = True,
    preset: str | None = None,
    output_dir: str | Path | None = None,
    resume: bool | str | Path = False,
    callbacks: list | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune an encoder-decoder model (FLAN-T5): `full` or `lora`, with `Seq2SeqTrainer`.

    The prompt is the encoder input and the bare summary the decoder target (`tok(text_target=...)`).
    Batches are padded per batch by `DataCollatorForSeq2Seq`, with label padding -100 so padding
    carries no loss (document 001 padded everything to 512 with pad ids as labels, which trains the
    model to emit padding). T5 never runs in fp16: its activations overflow. Keyword overrides are
    `Seq2SeqTrainingArguments` fields, plus `max_length` for truncating inputs and targets.
    """
    _check_method(method, SEQ2SEQ_METHODS)
    if family(model_name) != "t5":
        raise ValueError(f"{model_name!r} is a decoder-only model; use finetune()")
    if overrides.get("fp16"):
        raise ValueError(
            "fp16=True is refused for T5: its activations overflow in fp16 (NaN losses); use bf16"
        )
    if method == "full" and lora is not None:
        raise ValueError("method 'full' trains every weight; pass lora= only with method 'lora'")
    tmpl = _template(template)
    base_preset = preset or default_preset(model_name)
    doc_key = (
        f"{base_preset}-lora"
        if method == "lora" and f"{base_preset}-lora" in DOCUMENT_SETTINGS
        else base_preset
    )
    if doc_key not in DOCUMENT_SETTINGS:
        raise ValueError(f"unknown preset {base_preset!r}; expected one of: {', '.join(DOCUMENT_SETTINGS)}")

    fast_values: dict[str, Any] = {}
    if fast:
        fast_values = {"optim": "adamw_torch_fused", "train_sampling_strategy": "group_by_length"}
        if profile.device == "cuda":
            fast_values["bf16"] = profile.dtype == torch.bfloat16
    values, _ = _layered(
        cls=Seq2SeqTrainingArguments,
        base=args,
        document=DOCUMENT_SETTINGS[doc_key],
        fast_values=fast_values,
        profile=profile,
        overrides=dict(overrides),
        has_eval=isinstance(dataset, DatasetDict) and "validation" in dataset,
        output_dir=output_dir or (args.output_dir if args else _default_output_dir(model_name, method)),
        extra_fields=("max_length",),
    )
    max_length = values.pop("max_length", 512)
    values["fp16"] = False
    config = dataclasses.replace(args, **values) if args is not None else Seq2SeqTrainingArguments(**values)

    # 001 loaded FLAN-T5 in bf16 and trained it so; with fast=True the weights stay fp32 under autocast.
    dtype = torch.float32 if fast else torch.bfloat16
    model, tok = load_model(model_name, profile=profile, method=method, dtype=dtype)
    model.config.use_cache = False
    collator = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)
    peft_config = None
    if method == "lora":
        peft_config = copy.deepcopy(lora) if lora is not None else LORA_PRESETS[base_preset]()
        model = get_peft_model(model, peft_config)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = tok(batch["prompt"], truncation=True, max_length=max_length)
        enc["labels"] = tok(text_target=batch["completion"], truncation=True, max_length=max_length)[
            "input_ids"
        ]
        return enc

    def prepare(ds: Dataset) -> Dataset:
        ds = templates.to_seq2seq(ds, tmpl) if "dialogue" in ds.column_names else ds
        return ds.map(encode, batched=True, remove_columns=ds.column_names)

    train_raw, eval_raw = _splits(dataset)
    trainer = Seq2SeqTrainer(
        model=model,
        args=config,
        train_dataset=prepare(train_raw),
        eval_dataset=prepare(eval_raw) if eval_raw is not None else None,
        processing_class=tok,
        data_collator=collator,
        callbacks=callbacks,
    )
    settings = _settings(
        config,
        method=method,
        preset=doc_key,
        fast=fast,
        template=tmpl.name,
        max_length=max_length,
        model_path=profile.model(model_name),
        model_init_kwargs={"dtype": dtype},
        lora=peft_config.to_dict() if peft_config is not None else None,
    )
    return _run(trainer, resume=resume, model_name=model_name, method=method, settings=settings)


# ---------------------------------------------------------------------------------------------
# After training: adapters, merging, comparing
# ---------------------------------------------------------------------------------------------


def _adapter_dir(adapter_dir: str | Path) -> Path:
    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no adapter_config.json; expected a folder written by save_adapter()"
        )
    return path


def _adapter_tokenizer(path: Path, fallback: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    return load_tokenizer(path) if (path / "tokenizer_config.json").is_file() else fallback


def load_adapter(
    model_name: str,
    adapter_dir: str | Path,
    *,
    profile: Profile,
    quantized: bool | str = False,
    dtype: torch.dtype | None = None,
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """A saved LoRA adapter on a freshly loaded base, for inference: (PeftModel, tokenizer).

    `quantized=False` puts it on a full-precision base (fp32 unless `dtype` says otherwise);
    `True`/`"4bit"` on an NF4 base as in QLoRA training (document 003 serves it this way) and `"8bit"`
    on an LLM.int8 base. The adapter's own weights stay unmerged and in their saved precision.
    """
    path = _adapter_dir(adapter_dir)
    kinds = {False: "lora", True: "qlora", "4bit": "qlora", "nf4": "qlora", "8bit": "lora-8bit"}
    if quantized not in kinds:
        raise ValueError(f"quantized={quantized!r}; expected False, True, '4bit', 'nf4' or '8bit'")
    method = kinds[quantized]
    if dtype is None:
        dtype = profile.dtype_for(model_name) if method in QUANTIZED else torch.float32
    base, tok = load_model(model_name, profile=profile, method=method, dtype=dtype)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=False)
    return model.eval(), _adapter_tokenizer(path, tok)


def merge(
    model_name: str, adapter_dir: str | Path, *, profile: Profile, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Fold a LoRA adapter into a full-precision copy of its base: a plain model with no peft layers.

    The base is reloaded unquantized (fp32 by default) rather than merged into the 4-bit model it may
    have been trained on, because rounding W + BA back to NF4 loses most of the small update BA.
    """
    path = _adapter_dir(adapter_dir)
    base, tok = load_model(model_name, profile=profile, method="lora", dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(path), is_trainable=False).merge_and_unload()
    return merged.eval(), _adapter_tokenizer(path, tok)


def _device(model: torch.nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.inference_mode()
def _logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    ids = input_ids.to(_device(model))
    kwargs: dict[str, Any] = {"input_ids": ids}
    if model.config.is_encoder_decoder:
        start = torch.full((1, 1), model.config.decoder_start_token_id, device=ids.device)
        kwargs["decoder_input_ids"] = torch.cat([start, ids[:, :-1]], dim=1)  # score the prompt as a target
    return model(**kwargs).logits.float().cpu()


def compare_logits(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
) -> dict[str, float]:
    """How far two models' next-token logits are apart on the same prompts (eval mode, no padding).

    Returns `max_abs_diff`, `mean_abs_diff` over all positions and vocabulary entries, and
    `top1_agreement`, the fraction of positions whose most likely next token is the same: the number
    that decides whether greedy generations can differ.
    """
    if not prompts:
        raise ValueError("compare_logits needs at least one prompt")
    states = [(m, m.training) for m in (model_a, model_b)]
    for m, _ in states:
        m.eval()  # dropout would make even a model differ from itself
    try:
        max_diff, abs_sum, count, agree, positions = 0.0, 0.0, 0, 0, 0
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            a, b = _logits(model_a, ids), _logits(model_b, ids)
            if a.shape != b.shape:
                raise ValueError(
                    f"logit shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}; same tokenizer?"
                )
            diff = (a - b).abs()
            max_diff = max(max_diff, diff.max().item())
            abs_sum += diff.sum().item()
            count += diff.numel()
            agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
            positions += a.shape[0] * a.shape[1]
    finally:
        for m, was_training in states:
            m.train(was_training)
    return {"max_abs_diff": max_diff, "mean_abs_diff": abs_sum / count, "top1_agreement": agree / positions}
