"""tutorlib.generate on the tiny stand-ins: stop at the marker, cut, left padding, order, every model kind."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import LogitsProcessor, LogitsProcessorList

from tutorlib import profile, templates, train
from tutorlib.generate import summarize

TWEETSUMM = templates.TEMPLATES["tweetsumm"]
DIALOGUES = [
    "Customer: my phone is broken.\nAgent: please restart it.",
    "Customer: hi\nAgent: hello",
    "Customer: the train is late again and nobody tells us anything at all.\nAgent: sorry, a signal failed.",
]
SUMMARY = "Customer has a broken phone. Agent says restart."


class Force(LogitsProcessor):
    """Make the model write `token_ids`, one per step, whatever its weights say; count the steps taken."""

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids, self.steps, self.prompt_len = token_ids, 0, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        step = input_ids.shape[1] - self.prompt_len
        self.steps = max(self.steps, step + 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token_ids[min(step, len(self.token_ids) - 1)]] = 0.0
        return forced


@pytest.fixture(scope="module")
def smoke() -> profile.Profile:
    return profile.detect("smoke")


@pytest.fixture(scope="module")
def gpt2(smoke):
    return train.load_model("distilgpt2", profile=smoke)


def spy_on_generate(monkeypatch, model) -> list[dict]:
    calls: list[dict] = []
    real = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_generation_stops_at_the_marker_and_returns_the_cut_summary(gpt2):
    model, tok = gpt2
    before_marker = tok(f" {SUMMARY}")["input_ids"]
    with_marker = tok(f" {SUMMARY} {TWEETSUMM.end_marker}")["input_ids"]
    continuation = tok(f" {SUMMARY} {TWEETSUMM.end_marker} and then a lot more text that must never appear")
    force = Force(continuation["input_ids"])
    prompts = [TWEETSUMM.prompt(d) for d in DIALOGUES]
    out = summarize(
        model,
        tok,
        prompts,
        template=TWEETSUMM,
        max_new_tokens=40,
        logits_processor=LogitsProcessorList([force]),
    )
    assert out == [SUMMARY] * len(prompts)
    # Stopped once "<END" was written: after the summary, before the rest of the marker's tokens.
    assert len(before_marker) < force.steps <= len(with_marker) < len(force.token_ids)


def test_without_a_template_nothing_is_cut(gpt2):
    model, tok = gpt2
    force = Force(tok(f" {SUMMARY} {TWEETSUMM.end_marker} more")["input_ids"])
    out = summarize(
        model,
        tok,
        [TWEETSUMM.prompt(DIALOGUES[0])],
        max_new_tokens=len(force.token_ids),
        logits_processor=LogitsProcessorList([force]),
        progress=False,
    )
    assert out == [f"{SUMMARY} {TWEETSUMM.end_marker} more"]


def test_left_padding_batches_match_one_by_one_and_keep_order(gpt2, monkeypatch):
    model, tok = gpt2
    assert tok.padding_side == "right"
    prompts = [TWEETSUMM.prompt(d) for d in DIALOGUES]
    single = [summarize(model, tok, [p], max_new_tokens=8, progress=False)[0] for p in prompts]
    calls = spy_on_generate(monkeypatch, model)
    batched = summarize(model, tok, prompts, batch_size=3, max_new_tokens=8, progress=False)
    assert batched == single and len(set(single)) > 1  # same texts, each at its own prompt's index
    mask = calls[0]["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # padding on the left, real tokens at the end
    assert calls[0]["do_sample"] is False
    assert tok.padding_side == "right"  # restored


def test_works_on_peft_and_quantized_models(smoke):
    model, tok = train.load_model("llama-2-7b", profile=smoke)
    peft_model = get_peft_model(model, train.LORA_PRESETS["llama-2-7b"]())
    prompts = [TWEETSUMM.prompt(d) for d in DIALOGUES]
    assert summarize(peft_model, tok, prompts, max_new_tokens=6, progress=False) == summarize(
        model, tok, prompts, max_new_tokens=6, progress=False
    )  # LoRA's B starts at zero, so the untrained adapter changes nothing
    quantized, qtok = train.load_model("phi-2", profile=smoke, method="qlora")
    out = summarize(
        quantized, qtok, prompts, template=templates.TEMPLATES["phi2"], max_new_tokens=6, progress=False
    )
    assert len(out) == len(prompts) and all(isinstance(s, str) for s in out)


def test_seq2seq_uses_the_encoder_and_right_padding(smoke, monkeypatch):
    model, tok = train.load_model("flan-t5-base", profile=smoke)
    flan = templates.TEMPLATES["flan_t5"]
    prompts = [flan.prompt(d) for d in DIALOGUES]
    single = [summarize(model, tok, [p], template=flan, max_new_tokens=8, progress=False)[0] for p in prompts]
    calls = spy_on_generate(monkeypatch, model)
    batched = summarize(model, tok, prompts, template=flan, max_new_tokens=8, progress=False)
    assert batched == single
    mask = calls[0]["attention_mask"]
    assert mask[:, 0].all() and not mask[:, -1].all()  # encoder input padded on the right


def test_bad_input(gpt2):
    model, tok = gpt2
    with pytest.raises(TypeError, match="list of strings"):
        summarize(model, tok, "one prompt")
    with pytest.raises(ValueError, match="batch_size"):
        summarize(model, tok, ["a"], batch_size=0)
    assert summarize(model, tok, []) == []
