"""tutorlib.profile: choosing a profile, per-model dtype, sizes, seeding, secrets, the card."""

from __future__ import annotations

import os
import random

import pytest
import torch
import transformers

from tutorlib import env, models
from tutorlib import profile as prof


def test_default_without_cuda_is_cpu(monkeypatch):
    monkeypatch.delenv("TUTORLIB_PROFILE", raising=False)
    p = prof.detect()
    assert p.name == "cpu" and p.device == "cpu" and p.dtype == torch.float32


def test_env_and_argument_choose_profile(monkeypatch):
    monkeypatch.setenv("TUTORLIB_PROFILE", "FULL")
    assert prof.detect().name == "full"
    assert prof.detect("smoke").name == "smoke"
    with pytest.raises(ValueError, match=r"unknown profile 'tiny'.*full, cpu, smoke"):
        prof.detect("tiny")


def test_full_profile_names_hub_ids_and_honours_overrides(monkeypatch):
    monkeypatch.setenv("TUTORLIB_MODEL_OVERRIDES", "llama-2-7b=someone/llama-2-7b-ungated")
    p = prof.detect("full")
    assert p.checkpoint("flan-t5-base") == "google/flan-t5-base"
    assert p.checkpoint("distilgpt2") == "distilbert/distilgpt2"
    assert p.checkpoint("meta-llama/Llama-2-7b-hf") == "someone/llama-2-7b-ungated"
    with pytest.raises(ValueError, match=r"unknown model 'gpt-5'.*distilgpt2"):
        p.checkpoint("gpt-5")


@pytest.mark.parametrize(
    "value",
    [
        "llama-2-7b",
        "llama-2-7b=",
        "=x/y",
        "llama-2-7b=a/b;phi-2=c/d",
        "llama-2-7b=a/b,meta-llama/Llama-2-7b-hf=c/d",
        "llama2=a/b",  # a name the registry does not know
    ],
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
    assert p.training("flan-t5-base")["fp16"] is False and p.training("distilgpt2")["fp16"] is True
    assert (
        prof.Profile(name="full", device="cuda", dtype=torch.bfloat16).dtype_for("flan-t5-base")
        == torch.bfloat16
    )


def test_examples_cap_only_under_smoke():
    smoke, full = prof.detect("smoke"), prof.detect("full")
    assert smoke.examples("test", 50) == prof.SIZES["smoke"].examples["test"]
    assert smoke.examples("train") == prof.SIZES["smoke"].examples["train"]
    assert full.examples("test", 50) == 50 and full.examples("train") is None
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        full.examples("valid", 3)


def test_training_shortens_smoke_and_sets_precision():
    smoke = prof.detect("smoke").training("distilgpt2")
    assert smoke["max_steps"] > 0 and smoke["use_cpu"] is True and smoke["bf16"] is False
    full = prof.Profile(name="full", device="cuda", dtype=torch.bfloat16).training("llama-2-7b")
    assert full == {"bf16": True, "fp16": False}


def test_steps_are_the_notebooks_within_the_profiles_sizes():
    assert prof.detect("smoke").steps(200) == prof.SIZES["smoke"].training["max_steps"]
    assert prof.detect("smoke").steps(5) == 5
    assert prof.Profile(name="full", device="cuda", dtype=torch.float16).steps(200) == 200
    capped = prof.Profile(name="full", device="cpu", dtype=torch.float32, max_steps=3)
    assert capped.steps(200) == 3 and capped.training("distilgpt2")["max_steps"] == 3


def test_a_plan_merges_document_profile_and_notebook_once_in_that_order():
    smoke = prof.detect("smoke")
    plan = smoke.plan("distilgpt2", "lora", max_steps=7, weight_decay=0.5)
    document = models.spec("distilgpt2").training
    assert plan.args["max_steps"] == 7 and plan.sources["max_steps"] == "notebook"
    assert plan.args["weight_decay"] == 0.5 and plan.sources["weight_decay"] == "notebook"
    smoke_lr = prof.SIZES["smoke"].training["learning_rate"]
    assert plan.args["learning_rate"] == smoke_lr != document["learning_rate"]
    assert plan.sources["learning_rate"] == "profile"
    assert plan.args["num_train_epochs"] == document["num_train_epochs"]
    assert plan.sources["num_train_epochs"] == "document"
    assert plan.sources["report_to"] == "course"
    table = plan.table()
    assert table.loc["max_steps", "from"] == "notebook" and str(plan) in table.index.name
    assert plan.dtype == torch.float32 and plan.checkpoint == smoke.checkpoint("distilgpt2")


def test_a_plan_carries_the_documents_lora_and_quantization_fresh_each_time():
    full = prof.Profile(name="full", device="cuda", dtype=torch.float16)
    qlora = full.plan("llama-2-7b", "qlora")
    assert qlora.lora is not qlora.lora and qlora.lora.r == 16 and qlora.lora.lora_alpha == 32
    assert qlora.quantization.load_in_4bit and qlora.quantization.bnb_4bit_quant_type == "nf4"
    assert qlora.quantization.bnb_4bit_compute_dtype == torch.float16  # the card's, not bf16
    assert qlora.dtype == torch.float16 and qlora.args["fp16"] is True
    assert full.plan("llama-2-7b", "lora-8bit").quantization.load_in_8bit
    whole = full.plan("llama-2-7b")
    assert whole.lora is None and whole.quantization is None and whole.dtype == torch.float32
    adapters = full.plan("flan-t5-base", "lora")
    assert (
        adapters.args["learning_rate"] == models.spec("flan-t5-base").lora_training["learning_rate"]
    )
    with pytest.raises(ValueError, match=r"unknown method 'prefix'.*full, lora, lora-8bit, qlora"):
        full.plan("distilgpt2", "prefix")


def test_detect_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.delenv("TUTORLIB_PROFILE", raising=False)
    before = dict(os.environ)
    prof.detect("smoke")
    prof.detect("full")
    assert dict(os.environ) == before


def test_seeding_repeats_draws():
    prof.detect("smoke", seed=7)
    first = (random.random(), torch.rand(3))
    prof.detect("smoke", seed=7)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_card_names_profile_device_dtype_and_versions():
    card = prof.detect("smoke").card()
    for word in (
        "profile=smoke",
        "device=cpu",
        "dtype=float32",
        "transformers",
        "trl",
        "peft",
        "bitsandbytes",
    ):
        assert word in card
    assert "\n" not in card


def test_blank_secret_is_no_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "   ")
    assert env.secret("HF_TOKEN") is None
    monkeypatch.setenv("HF_TOKEN", " hf_abc ")
    assert env.secret("HF_TOKEN") == "hf_abc"


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


def test_a_seed_other_than_the_trainers_default_reaches_the_trainer():
    # Before: detect(seed=1) seeded torch, but the trainer reseeded with its default 42.
    assert prof.detect("smoke", seed=1).plan("distilgpt2").args["seed"] == 1
    assert "seed" not in prof.detect("smoke", seed=42).plan("distilgpt2").args
    assert transformers.TrainingArguments.seed == prof.TRAINER_SEED
