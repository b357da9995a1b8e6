"""Loading and training as a run plan says: the steps notebooks 01 and 03 show once in plain sight,
written once for later cells. `Run` is what a run cost: time, peak memory, parameters, loss log."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from tutorlib import memory, models, paths, templates
from tutorlib.plan import Plan


def load_model(plan: Plan) -> tuple[Any, Any]:
    """(model, tokenizer) as the notebooks load them: the plan's checkpoint, dtype and quantization,
    everything on the one device there is ("auto" could offload quantized layers to the CPU)."""
    bnb, device = plan.quantization, plan.profile.device
    with models.plain_falcon_linears(plan.spec.family == "falcon" and bnb is not None):
        model = models.auto_class(plan.model).from_pretrained(
            plan.checkpoint, dtype=plan.dtype, device_map=device, quantization_config=bnb
        )
    if bnb is not None:
        cpu_quantization_fixes(model)
    tokenizer = AutoTokenizer.from_pretrained(plan.checkpoint)
    if tokenizer.pad_token is None:  # GPT-2, Llama, Falcon and Phi ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def cpu_quantization_fixes(model: torch.nn.Module) -> None:
    """Check that something was quantized; keep bitsandbytes' CPU 4-bit layers trainable (no-op on
    GPUs): on AVX512-BF16 CPUs they repack their weights for inference on the first eval-mode
    forward and never unpack them, so a later training step crashes."""
    quantized = [m for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    if not quantized:
        raise RuntimeError("a quantized load was asked for, but no layer was quantized")
    for module in quantized:
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def prepare(
    dataset: DatasetDict, template: templates.Template, tokenizer: Any, max_length: int
) -> DatasetDict:
    """dialogue/summary rows -> prompt/completion rows within `max_length` tokens, counted up front.
    trl would silently drop an over-long example; here its dialogue is cut at the end (instruction,
    summary header and whole summary survive) with a warning, and the example is dropped only when
    even its summary cannot fit. No usable example left is an error."""
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
            if len(ids) > room:
                # keep room - 2 tokens: re-tokenizing the cut text may add one or two
                dialogue = tokenizer.decode(ids[: max(room - 2, 0)]).strip()
                cut += bool(dialogue)
            if not dialogue:  # the summary leaves no room for any of the dialogue
                dropped += 1
                continue
            rows.append({"prompt": template.prompt(dialogue), "completion": fixed})
        if cut or dropped:
            warnings.warn(
                f"{split}: {cut} of {len(ds)} dialogues were cut at the end to fit "
                f"max_length={max_length}; {dropped} examples dropped: their summary leaves no "
                "room for the dialogue",
                stacklevel=2,
            )
        if not rows:
            if len(ds):
                what = f"all {len(ds)} are too long for max_length={max_length}"
            else:
                what = "the split has no rows"
            raise ValueError(f"no usable {split} example: {what}")
        out[split] = Dataset.from_list(rows)
    return DatasetDict(out)


@dataclass
class Run:
    """One finished training run: the model and what it cost (`usage`: time and peak memory)."""

    model: Any
    tokenizer: Any
    model_name: str
    method: str
    usage: memory.Usage
    trainable_params: int
    total_params: int
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, trainer: Any, usage: memory.Usage, plan: Plan, method: str | None = None) -> Run:
        """Package a trained `trainer` and the `memory.track()` reading taken around its
        `train()`; `method` names a run the plan's method does not describe (e.g. "lora+dpo")."""
        model = trainer.model
        model.config.use_cache = True  # back on for generation, which it speeds up many times
        model.eval()
        if isinstance(model, PeftModel):  # peft counts a 4-bit tensor's packed weights right
            trainable, total = model.get_nb_trainable_parameters()
        else:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
        history = list(trainer.state.log_history)
        name, tokenizer = plan.model, trainer.processing_class
        return cls(model, tokenizer, name, method or plan.method, usage, trainable, total, history)

    @property
    def seconds(self) -> float:
        return self.usage.seconds

    @property
    def peak_memory_mb(self) -> float:
        return self.usage.peak_mb

    @property
    def memory_kind(self) -> str:
        return self.usage.kind

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    def __str__(self) -> str:
        share = 100 * self.trainable_params / max(self.total_params, 1)
        trained = f"{self.trainable_params:,} of {self.total_params:,} parameters ({share:.2f} %)"
        loss = f"; loss {self.losses[0]:.2f} -> {self.losses[-1]:.2f}" if self.losses else ""
        return f"{self.model_name} {self.method}: trained {trained} in {self.usage}{loss}"


def finetune(
    plan: Plan,
    dataset: DatasetDict,
    *,
    template: templates.Template,
    callbacks: list | None = None,
    resume: bool = False,
) -> Run:
    """The steps notebooks 01 and 03 show, in one call: load, (quantize,) add LoRA, train with
    SFTTrainer, all as `plan` says. A checkpoint is kept every `save_steps` (500 unless set;
    `smoke` saves none); `resume=True` continues from the last one, and the returned history then
    covers the whole run."""
    if plan.spec.seq2seq:
        why = "train it with Seq2SeqTrainer, as notebook 04 shows"
        raise ValueError(f"{plan.model} is an encoder-decoder: {why}")
    output_dir = paths.runs_dir() / "train" / f"{plan.model}-{plan.method}"
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume and checkpoint is None:
        raise FileNotFoundError(
            f"resume=True, but {output_dir} holds no checkpoint-* folder: checkpoints are written "
            "when save_strategy='steps' (every save_steps); smoke sets 'no'"
        )
    args = dict(plan.args)
    if "validation" not in dataset:
        args["eval_strategy"] = "no"
    model, tokenizer = load_model(plan)
    if plan.method in models.QUANTIZED:  # fp32 norms, input grads, activation checkpointing
        model = prepare_model_for_kbit_training(model)
    if plan.lora is not None:
        model = get_peft_model(model, plan.lora)
    model.config.use_cache = False  # the attention cache only helps generation
    data = prepare(dataset, template, tokenizer, args.get("max_length") or 1024)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=str(output_dir), **args),
        train_dataset=data["train"],
        eval_dataset=data.get("validation"),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    with memory.track() as usage:
        trainer.train(resume_from_checkpoint=checkpoint if resume else None)
    return Run.of(trainer, usage, plan)
