"""The few lines notebooks 01-03 show once in plain sight, written once for their later repetitions.

Notebook 01 builds `SFTConfig` and `SFTTrainer` in its own cells, and notebook 03 builds `LoraConfig`,
`BitsAndBytesConfig`, the quantized `from_pretrained`, `prepare_model_for_kbit_training` and
`get_peft_model`. `finetune()` repeats exactly those steps with the registry's document settings and
the profile's sizes, so a later cell can train another configuration in one line. `Run` is what a
training run cost: wall time, peak memory, parameter counts and the loss log.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoTokenizer, BitsAndBytesConfig
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from tutorlib import memory, models, paths, templates
from tutorlib.profile import Profile

METHODS = ("full", "lora", "lora-8bit", "qlora")
QUANTIZED = ("lora-8bit", "qlora")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")


def document_settings(name: str, method: str = "full") -> dict[str, Any]:
    """The document's trainer settings for a model (and for its adapter runs, where they differ)."""
    _check_method(method)
    spec = models.spec(name)
    return {**spec.training, **(spec.lora_training if method != "full" else {})}


def lora_config(name: str) -> LoraConfig:
    """The document's `LoraConfig` for a model (a new object each time: peft and trl modify theirs)."""
    return LoraConfig(**models.spec(name).lora)


def quantization_config(method: str, name: str, profile: Profile) -> BitsAndBytesConfig | None:
    """LLM.int8 for `lora-8bit`; NF4 with the document's double quantization for `qlora`; None otherwise.

    The compute dtype is the profile's (bf16 on Ampere and newer, fp16 on V100/T4, fp32 on CPU), not
    the document's bf16, which a V100 can only emulate.
    """
    _check_method(method)
    if method == "lora-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if method != "qlora":
        return None
    bnb = {**models.spec(name).bnb, "bnb_4bit_compute_dtype": profile.dtype_for(name)}
    return BitsAndBytesConfig(load_in_4bit=True, **bnb)


def load_model(name: str, profile: Profile, *, method: str = "full", **kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) as the notebooks load them: fp32 for full fine-tuning, else the profile's dtype.

    A quantized method gets `quantization_config(method, ...)`. Everything goes on the one device there
    is. Keyword arguments go to `from_pretrained`.
    """
    _check_method(method)
    path = profile.model(name)
    bnb = quantization_config(method, name, profile)
    options: dict[str, Any] = {"dtype": torch.float32 if method == "full" else profile.dtype_for(name)}
    options["device_map"] = profile.device  # one device: "auto" could offload quantized layers to the CPU
    if bnb is not None:
        options["quantization_config"] = bnb
    options.update(kwargs)
    with models.plain_falcon_linears(models.spec(name).family == "falcon" and bnb is not None):
        model = models.auto_class(name).from_pretrained(path, **options)
    if bnb is not None:
        cpu_quantization_fixes(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # GPT-2, Llama, Falcon and Phi ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def cpu_quantization_fixes(model: torch.nn.Module) -> None:
    """Keep bitsandbytes' CPU 4-bit layers trainable: do nothing on a GPU, and check something was quantized.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights into an inference layout the
    first time a layer runs in eval mode and never unpacks them, so a later training step crashes.
    """
    quantized = [m for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    if not quantized:
        raise RuntimeError("a quantized load was asked for, but no layer was quantized")
    for module in quantized:
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def prepare(dataset: DatasetDict, template: templates.Template, tokenizer: Any, max_length: int) -> DatasetDict:
    """dialogue/summary rows -> prompt/completion rows that fit `max_length` tokens, counted before training.

    trl would silently drop an example that is too long. Here an over-long dialogue is cut at its end
    (the instruction, the summary header and the whole summary survive), with a visible warning; an
    example is dropped only when even its summary cannot fit. No usable example left is an error.
    """
    out = {}
    for split, ds in dataset.items():
        if split == "test":
            continue
        rows, cut, dropped = [], 0, 0
        for dialogue, summary in zip(ds["dialogue"], ds["summary"], strict=True):
            fixed = template.completion(summary)
            frame = len(tokenizer(template.prompt(".") + fixed).input_ids) + 2  # + eos and a margin
            ids = tokenizer(dialogue, add_special_tokens=False).input_ids
            room = max_length - frame
            if len(ids) > room:  # keep room - 2 tokens: re-tokenizing the cut text may add one or two
                dialogue = tokenizer.decode(ids[: max(room - 2, 0)]).strip()
                cut += bool(dialogue)
            if not dialogue:  # the summary leaves no room for any of the dialogue
                dropped += 1
                continue
            rows.append({"prompt": template.prompt(dialogue), "completion": fixed})
        if cut or dropped:
            warnings.warn(f"{split}: {cut} of {len(ds)} dialogues were cut at the end to fit max_length="
                          f"{max_length}; {dropped} examples dropped: their summary leaves no room for the dialogue",
                          stacklevel=2)
        if not rows:
            what = f"all {len(ds)} are too long for max_length={max_length}" if len(ds) else "the split has no rows"
            raise ValueError(f"no usable {split} example: {what}")
        out[split] = Dataset.from_list(rows)
    return DatasetDict(out)


def _counts(model: torch.nn.Module) -> tuple[int, int]:
    if isinstance(model, PeftModel):
        return model.get_nb_trainable_parameters()  # counts a 4-bit tensor's packed weights correctly
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@dataclass
class Run:
    """One finished training run: the model and what it cost (memory kind "cuda" or "cpu_rss")."""

    model: Any
    tokenizer: Any
    model_name: str
    method: str
    seconds: float
    peak_memory_mb: float
    memory_kind: str
    trainable_params: int
    total_params: int
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, trainer: Any, usage: memory.Usage, *, model_name: str, method: str) -> Run:
        """Package a trained `trainer` and the `memory.track()` reading taken around `trainer.train()`."""
        model = trainer.model
        model.config.use_cache = True  # back on for generation, which it speeds up many times
        model.eval()
        trainable, total = _counts(model)
        return cls(model, trainer.processing_class, models.spec(model_name).name, method, usage.seconds,
                   usage.peak_mb, usage.kind, trainable, total, list(trainer.state.log_history))

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    def __str__(self) -> str:
        share = 100 * self.trainable_params / max(self.total_params, 1)
        loss = f"; loss {self.losses[0]:.2f} -> {self.losses[-1]:.2f}" if self.losses else ""
        return (f"{self.model_name} {self.method}: trained {self.trainable_params:,} of {self.total_params:,} "
                f"parameters ({share:.2f} %) in {self.seconds / 60:.2f} min; peak {self.peak_memory_mb:,.0f} MB "
                f"({self.memory_kind}){loss}")


def finetune(name: str, dataset: DatasetDict, *, method: str, template: templates.Template, profile: Profile,
             callbacks: list | None = None, resume: bool = False, **overrides: Any) -> Run:
    """The steps notebooks 01 and 03 show, in one call: load, (quantize,) add LoRA, train with SFTTrainer.

    Settings: the document's, then the profile's, then `overrides` (SFTConfig fields). A checkpoint is
    kept every `save_steps` (500 unless set; `smoke` saves none); `resume=True` continues from the
    last one, and the returned history then covers the whole run.
    """
    if models.spec(name).seq2seq:
        raise ValueError(f"{name} is an encoder-decoder: train it with Seq2SeqTrainer, as notebook 04 shows")
    settings = {"eval_strategy": "epoch", "save_total_limit": 2, **document_settings(name, method),
                **profile.train_args(name), **overrides}
    output_dir = paths.runs_dir() / "train" / f"{name}-{method}"
    checkpoint = get_last_checkpoint(str(output_dir)) if resume and output_dir.is_dir() else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"resume=True, but {output_dir} holds no checkpoint-* folder: checkpoints are "
                                "written when save_strategy='steps' (every save_steps); smoke sets 'no'")
    if "validation" not in dataset:
        settings["eval_strategy"] = "no"
    model, tokenizer = load_model(name, profile, method=method)
    if method in QUANTIZED:
        model = prepare_model_for_kbit_training(model)  # fp32 norms, input grads, activation checkpointing
    if method != "full":
        model = get_peft_model(model, lora_config(name))
    model.config.use_cache = False  # the attention cache only helps generation
    data = prepare(dataset, template, tokenizer, settings.get("max_length") or 1024)
    config = SFTConfig(output_dir=str(output_dir), **settings)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data["train"], eval_dataset=data.get("validation"),
                         processing_class=tokenizer, callbacks=callbacks)
    with memory.track() as usage:
        trainer.train(resume_from_checkpoint=checkpoint)
    return Run.of(trainer, usage, model_name=name, method=method)
