"""tutorlib.profile: choosing a profile, per-model dtype, sizes, seeding, secrets, the card."""

from __future__ import annotations

import random

import pytest
import torch

from tutorlib import profile as prof


def test_default_without_cuda_is_smoke(monkeypatch):
    monkeypatch.delenv("TUTORLIB_PROFILE", raising=False)
    p = prof.detect()
    assert p.name == "smoke" and p.device == "cpu" and p.dtype == torch.float32


def test_env_and_argument_choose_profile(monkeypatch):
    monkeypatch.setenv("TUTORLIB_PROFILE", "FULL")
    assert prof.detect().name == "full"
    assert prof.detect("smoke").name == "smoke"
    with pytest.raises(ValueError, match=r"unknown profile 'tiny'.*full, smoke"):
        prof.detect("tiny")


def test_full_profile_names_hub_ids_and_honours_overrides(monkeypatch):
    monkeypatch.setenv("TUTORLIB_MODEL_OVERRIDES", "llama-2-7b=someone/llama-2-7b-ungated")
    p = prof.detect("full")
    assert p.model("flan-t5-base") == "google/flan-t5-base"
    assert p.model("distilgpt2") == "distilbert/distilgpt2"
    assert p.model("meta-llama/Llama-2-7b-hf") == "someone/llama-2-7b-ungated"
    with pytest.raises(ValueError, match=r"unknown model 'gpt-5'.*distilgpt2"):
        p.model("gpt-5")


@pytest.mark.parametrize(
    "value",
    ["llama-2-7b", "llama-2-7b=", "=x/y", "llama-2-7b=a/b;phi-2=c/d", "llama-2-7b=a/b,meta-llama/Llama-2-7b-hf=c/d"],
)
def test_malformed_overrides_name_the_variable(monkeypatch, value):
    monkeypatch.setenv("TUTORLIB_MODEL_OVERRIDES", value)
    with pytest.raises(ValueError, match="TUTORLIB_MODEL_OVERRIDES"):
        prof.detect("full")


def test_empty_overrides_are_no_overrides(monkeypatch):
    monkeypatch.setenv("TUTORLIB_MODEL_OVERRIDES", " , ")
    assert prof.detect("full").model_overrides == {}


def test_t5_never_gets_fp16():
    p = prof.Profile(name="full", device="cuda", dtype=torch.float16)
    assert p.dtype_for("google/flan-t5-base") == torch.float32
    assert p.dtype_for("distilgpt2") == torch.float16
    assert p.train_args("flan-t5-base")["fp16"] is False and p.train_args("distilgpt2")["fp16"] is True
    assert prof.Profile(name="full", device="cuda", dtype=torch.bfloat16).dtype_for("flan-t5-base") == torch.bfloat16


def test_examples_cap_only_under_smoke():
    smoke, full = prof.detect("smoke"), prof.detect("full")
    assert smoke.examples("test", 50) == prof.SMOKE_EXAMPLES["test"]
    assert smoke.examples("train") == prof.SMOKE_EXAMPLES["train"]
    assert full.examples("test", 50) == 50 and full.examples("train") is None
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        full.examples("valid", 3)


def test_train_args_shorten_smoke_and_set_precision():
    smoke = prof.detect("smoke").train_args("distilgpt2")
    assert smoke["max_steps"] > 0 and smoke["use_cpu"] is True and smoke["bf16"] is False
    full = prof.Profile(name="full", device="cuda", dtype=torch.bfloat16).train_args("llama-2-7b")
    assert full == {"bf16": True, "fp16": False, "report_to": "none", "disable_tqdm": False}


def test_seeding_repeats_draws():
    prof.detect("smoke", seed=7)
    first = (random.random(), torch.rand(3))
    prof.detect("smoke", seed=7)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_card_names_profile_device_dtype_and_versions():
    card = prof.detect("smoke").card()
    for word in ("profile=smoke", "device=cpu", "dtype=float32", "transformers", "trl", "peft", "bitsandbytes"):
        assert word in card
    assert "\n" not in card


def test_blank_secret_is_no_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "   ")
    assert prof.secret("HF_TOKEN") is None
    monkeypatch.setenv("HF_TOKEN", " hf_abc ")
    assert prof.secret("HF_TOKEN") == "hf_abc"


def test_hub_login_reads_env_and_never_prints_token(monkeypatch, capsys):
    secret = "hf_SECRET_token_123456"
    monkeypatch.setenv("HF_TOKEN", secret)
    assert prof.hub_login(prof.detect("full")) is True
    assert prof.hub_login(prof.detect("smoke")) is False
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert prof.hub_login(prof.detect("full")) is False
    out = capsys.readouterr().out
    assert secret not in out and "HF_TOKEN" in out
