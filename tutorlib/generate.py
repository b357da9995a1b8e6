"""Batched summary generation: left padding, greedy by default, stop at the template's end marker, cut."""

import warnings

import torch
from tqdm.auto import tqdm


def summarize(
    model, tokenizer, prompts: list[str], *, template=None, max_new_tokens=100, batch_size=8, **kwargs
) -> list[str]:
    """One summary per prompt, in order (`template`: a `templates.Template`; `kwargs` go to generate).
    A prompt too long for the model's context with `max_new_tokens` loses its beginning, not its header."""
    if isinstance(prompts, str) or batch_size < 1:
        raise ValueError(f"expected a list of prompts and batch_size >= 1, got {type(prompts).__name__}")
    if not prompts:
        return []
    if empty := [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]:
        raise ValueError(f"prompts at index {empty} are empty or not text; expected a non-empty prompt each")
    config, seq2seq = model.config, bool(model.config.is_encoder_decoder)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    limit = None if seq2seq or not context else context - max_new_tokens  # T5: relative positions, no limit
    if limit is not None and limit < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {context} tokens")
    if limit and (long := [i for i, ids in enumerate(tokenizer(prompts)["input_ids"]) if len(ids) > limit]):
        cut = f"only their last {limit} tokens are used, which keeps the summary header at the end"
        warnings.warn(f"prompts at index {long} do not fit the {context}-token context: {cut}", stacklevel=2)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # use_cache: training switches it off in the model's config; decoding is much faster with it.
    args = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    args["use_cache"] = True
    if template is not None and template.end_marker:
        args |= {"stop_strings": [template.end_marker], "tokenizer": tokenizer}  # generate needs both
    args |= kwargs
    saved, was_training = (tokenizer.padding_side, tokenizer.truncation_side), model.training
    # Decoder-only: pad on the left, so that the new tokens follow each prompt's last token directly.
    tokenizer.padding_side, tokenizer.truncation_side = "right" if seq2seq else "left", "left"
    fit = {"truncation": True, "max_length": limit} if limit else {}  # cut on the left, set above
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths, fewer pads
    outputs = [""] * len(prompts)
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="generating"):
                idx = order[start : start + batch_size]
                batch = [prompts[i] for i in idx]
                enc = tokenizer(batch, return_tensors="pt", padding=True, **fit).to(model.device)
                # Keyword arguments only: PeftModel.generate refuses positional ones.
                out = model.generate(**enc, **args)
                new = out if seq2seq else out[:, enc["input_ids"].shape[1] :]
                for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                    outputs[i] = template.cut(text) if template is not None else text.strip()
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved
        model.train(was_training)
    return outputs
