"""Batched summary generation: left padding, stop strings, only the new tokens, cut at the marker.

`summarize()` works the same for a base model, a fine-tuned one, a peft adapter on a full-precision
or quantized base, a merged model and an encoder-decoder (FLAN-T5). Decoder-only models get their
prompts padded on the left, so every row's last real token sits at the end of the batch and the new
tokens are appended directly after it; greedy decoding is the default so runs are repeatable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:  # templates imports datasets, which generation does not need at import time
    from tutorlib.templates import Template


def summarize(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    template: Template | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 100,
    progress: bool = True,
    **generation_kwargs: Any,
) -> list[str]:
    """Generate one summary per prompt, in the prompts' order.

    Prompts are processed in batches of similar length (fewer pad tokens), greedily unless
    `do_sample=True` is passed. With a `template`, generation stops at its `stop_strings` (e.g. the
    `<END_OF_SECOND_SENTENCE>` marker) and each output is cut by `template.cut`; without one, the
    decoded new text is only stripped. Extra keyword arguments go to `model.generate`. A tokenizer
    without a pad token gets pad = eos; its padding side is restored afterwards.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not prompts:
        return []
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoder_decoder = bool(model.config.is_encoder_decoder)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,  # training leaves config.use_cache off; the cache makes decoding much faster
    }
    if template is not None and template.stop_strings:
        kwargs["stop_strings"] = list(template.stop_strings)
    kwargs.update(generation_kwargs)
    if "stop_strings" in kwargs:
        kwargs["tokenizer"] = tokenizer  # generate() cannot match stop strings without it

    device = model.get_input_embeddings().weight.device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    side, was_training = tokenizer.padding_side, model.training
    # Decoder-only: new tokens must follow each prompt directly, so the padding goes in front.
    tokenizer.padding_side = "right" if encoder_decoder else "left"
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="generating", disable=not progress):
                idx = order[start : start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
                out = model.generate(**enc, **kwargs)  # keyword-only: PeftModel.generate refuses positionals
                new = out if encoder_decoder else out[:, enc["input_ids"].shape[1] :]
                for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                    outputs[i] = template.cut(text) if template is not None else text.strip()
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs
