"""Batched summary generation: left padding, greedy by default, stop at the template's end marker,
cut what follows the summary."""

import warnings
from typing import Any

import torch
from tqdm.auto import tqdm


def summarize(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    template: Any = None,
    max_new_tokens: int = 100,
    batch_size: int = 8,
    **kwargs: Any,
) -> list[str]:
    """One summary per prompt, in order (`template`: a `templates.Template`; `kwargs` go to
    `generate`). A prompt too long for the model's context with `max_new_tokens` loses its
    beginning, never its summary header."""
    if isinstance(prompts, str) or batch_size < 1:
        got = type(prompts).__name__
        raise ValueError(f"expected a list of prompts and batch_size >= 1, got {got}")
    if empty := [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]:
        why = "are empty or not text; expected a non-empty prompt each"
        raise ValueError(f"prompts at index {empty} {why}")
    if not prompts:
        return []
    seq2seq = bool(model.config.is_encoder_decoder)
    limit = _prompt_limit(model.config, tokenizer, prompts, max_new_tokens, seq2seq)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # use_cache: training switches it off in the model's config; decoding is much faster with it.
    args = {"max_new_tokens": max_new_tokens, "do_sample": False, "use_cache": True}
    args["pad_token_id"] = tokenizer.pad_token_id
    if template is not None and template.end_marker:  # generate needs the tokenizer for these
        args |= {"stop_strings": [template.end_marker], "tokenizer": tokenizer}
    args |= kwargs
    saved, was_training = (tokenizer.padding_side, tokenizer.truncation_side), model.training
    # Decoder-only: pad on the left, so that the new tokens follow each prompt's last token.
    tokenizer.padding_side, tokenizer.truncation_side = "right" if seq2seq else "left", "left"
    fit = {"truncation": True, "max_length": limit} if limit else {}  # cut on the left, set above
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: few pads
    outputs = [""] * len(prompts)
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="generating"):
                idx = order[start : start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, **fit)
                # keywords: PeftModel needs them
                out = model.generate(**enc.to(model.device), **args)
                new = out if seq2seq else out[:, enc["input_ids"].shape[1] :]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                for i, text in zip(idx, texts, strict=True):
                    outputs[i] = template.cut(text) if template is not None else text.strip()
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved
        model.train(was_training)
    return outputs


def _prompt_limit(
    config: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, seq2seq: bool
) -> int | None:
    """The most prompt tokens that leave room for the summary (None: no limit, as for T5's
    relative positions); warns about the prompts that will lose their beginning."""
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0)
    if seq2seq or not context:
        return None
    limit = context - max_new_tokens
    if limit < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {context} tokens"
        )
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    if long := [i for i, n in enumerate(lengths) if n > limit]:
        cut = f"only their last {limit} tokens are used, which keeps the summary header at the end"
        # stacklevel 3: the warning points at the caller of summarize()
        message = f"prompts at index {long} do not fit the {context}-token context: {cut}"
        warnings.warn(message, stacklevel=3)
    return limit
