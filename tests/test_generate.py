"""tutorlib.generate on tiny stand-ins: stop at the marker, cut, left padding, order, long and empty prompts."""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, LogitsProcessor

from tutorlib import templates
from tutorlib.generate import summarize
from tutorlib.profile import detect

TWEETSUMM = templates.TEMPLATES["tweetsumm"]
DIALOGUES = [
    "Customer: my phone is broken.\nAgent: please restart it.",
    "Customer: hi\nAgent: hello",
    "Customer: the train is late again and nobody tells us anything at all.\nAgent: sorry, a signal failed.",
]
PROMPTS = [TWEETSUMM.prompt(d) for d in DIALOGUES]
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


def stand_in(name: str, auto_class):
    """The smoke profile's local stand-in of `name`, with its tokenizer."""
    path = detect("smoke").checkpoint(name)
    torch.manual_seed(0)
    return auto_class.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def gpt2():
    return stand_in("distilgpt2", AutoModelForCausalLM)


def spy_on_generate(monkeypatch, model) -> list[dict]:
    calls: list[dict] = []
    real = model.generate

    def spy(**kwargs):
        calls.append(kwargs | {"training": model.training})
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_generation_stops_at_the_marker_and_returns_the_cut_summary(gpt2, monkeypatch):
    model, tok = gpt2
    before_marker = tok(f" {SUMMARY}")["input_ids"]
    with_marker = tok(f" {SUMMARY} {TWEETSUMM.end_marker}")["input_ids"]
    force = Force(
        tok(f" {SUMMARY} {TWEETSUMM.end_marker} and then a lot more text that must never appear")[
            "input_ids"
        ]
    )
    calls = spy_on_generate(monkeypatch, model)
    out = summarize(
        model, tok, PROMPTS, template=TWEETSUMM, max_new_tokens=40, logits_processor=[force]
    )
    assert out == [SUMMARY] * len(PROMPTS)
    # Stopped once the marker was written: after the summary, long before the forced text ran out.
    assert len(before_marker) < force.steps <= len(with_marker) < len(force.token_ids)
    assert calls[0]["stop_strings"] == [TWEETSUMM.end_marker] and calls[0]["tokenizer"] is tok
    assert calls[0]["do_sample"] is False and calls[0]["training"] is False


def test_without_a_marker_or_a_template_nothing_stops_early(gpt2, monkeypatch):
    model, tok = gpt2
    force = Force(tok(f" {SUMMARY} {TWEETSUMM.end_marker} more")["input_ids"])
    calls = spy_on_generate(monkeypatch, model)
    out = summarize(
        model, tok, PROMPTS[:1], max_new_tokens=len(force.token_ids), logits_processor=[force]
    )
    assert out == [f"{SUMMARY} {TWEETSUMM.end_marker} more"]
    summarize(
        model, tok, PROMPTS[:1], template=templates.TEMPLATES["falcon_samsum"], max_new_tokens=2
    )
    assert all("stop_strings" not in call for call in calls)


def test_left_padding_batches_match_one_by_one_and_keep_order(gpt2, monkeypatch):
    model, tok = gpt2
    side = tok.padding_side
    model.train()
    single = [summarize(model, tok, [p], max_new_tokens=8)[0] for p in PROMPTS]
    calls = spy_on_generate(monkeypatch, model)
    batched = summarize(model, tok, PROMPTS, batch_size=3, max_new_tokens=8)
    assert batched == single and len(set(single)) > 1  # same texts, each at its own prompt's index
    mask = calls[0]["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # padding on the left, real tokens at the end
    assert tok.padding_side == side and model.training  # both restored
    model.eval()


def test_an_untrained_lora_adapter_changes_nothing(gpt2):
    model, tok = gpt2
    base = summarize(model, tok, PROMPTS, max_new_tokens=6)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"),
    )
    try:
        assert (
            summarize(peft_model, tok, PROMPTS, max_new_tokens=6) == base
        )  # LoRA's B starts at zero
    finally:
        peft_model.unload()


def test_seq2seq_uses_the_encoder_and_right_padding(monkeypatch):
    model, tok = stand_in("flan-t5-base", AutoModelForSeq2SeqLM)
    flan = templates.TEMPLATES["flan_t5"]
    prompts = [flan.prompt(d) for d in DIALOGUES]
    single = [summarize(model, tok, [p], template=flan, max_new_tokens=8)[0] for p in prompts]
    calls = spy_on_generate(monkeypatch, model)
    assert summarize(model, tok, prompts, template=flan, max_new_tokens=8) == single
    mask = calls[0]["attention_mask"]
    assert mask[:, 0].all() and not mask[:, -1].all()  # encoder input padded on the right


def test_a_prompt_too_long_is_cut_from_the_left_and_the_others_are_kept(gpt2, monkeypatch):
    model, tok = gpt2
    context = max(len(tok(p)["input_ids"]) for p in PROMPTS[:2]) + 12
    monkeypatch.setattr(
        model.config, "n_positions", context
    )  # a small context, so that one prompt overflows
    long_prompt = TWEETSUMM.prompt(" ".join(DIALOGUES * 6))
    prompts = [PROMPTS[0], long_prompt, PROMPTS[1]]
    limit = context - 4
    assert len(tok(long_prompt)["input_ids"]) > 2 * limit
    expected = [summarize(model, tok, [p], max_new_tokens=4)[0] for p in (PROMPTS[0], PROMPTS[1])]
    calls = spy_on_generate(monkeypatch, model)
    with pytest.warns(UserWarning) as record:
        out = summarize(model, tok, prompts, batch_size=1, max_new_tokens=4)
    assert [str(w.message) for w in record if "context" in str(w.message)] == [
        f"prompts at index [1] do not fit the {context}-token context: only their last {limit} tokens are used, "
        "which keeps the summary header at the end"
    ]
    assert [out[0], out[2]] == expected and out[1]
    kept = calls[-1]["input_ids"][0].tolist()  # the longest prompt runs last
    assert (
        kept == tok(long_prompt)["input_ids"][-limit:]
    )  # its end, with the summary header, survives
    assert tok.decode(kept).endswith("### Summary:")


def test_empty_prompts_are_named_before_anything_is_generated(gpt2, monkeypatch):
    model, tok = gpt2
    calls = spy_on_generate(monkeypatch, model)
    with pytest.raises(ValueError, match=r"prompts at index \[1, 3\] are empty"):
        summarize(model, tok, [PROMPTS[0], "  \n", PROMPTS[1], None])
    assert calls == []


def test_bad_arguments(gpt2):
    model, tok = gpt2
    with pytest.raises(ValueError, match="expected a list of prompts"):
        summarize(model, tok, "one prompt")
    with pytest.raises(ValueError, match="batch_size >= 1"):
        summarize(model, tok, ["a"], batch_size=0)
    with pytest.raises(
        ValueError, match="max_new_tokens=2000 leaves no room for a prompt in 1024 tokens"
    ):
        summarize(model, tok, ["a"], max_new_tokens=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert summarize(model, tok, []) == []
