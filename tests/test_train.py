"""tutorlib.train: the document settings, the configs, counting before training, and real short runs."""

from __future__ import annotations

import warnings

import pytest
import torch
from datasets import Dataset, DatasetDict

from tutorlib import data, train
from tutorlib.profile import detect
from tutorlib.templates import TEMPLATES

TEMPLATE = TEMPLATES["tweetsumm"]


@pytest.fixture(scope="module")
def smoke():
    return detect("smoke")


@pytest.fixture(scope="module")
def tweetsumm():
    return data.load("tweetsumm")


def test_plans_carry_the_documents_settings_and_adapter_overrides(smoke):
    full = detect("full")
    distil = full.plan("distilgpt2").args
    assert (distil["learning_rate"], distil["num_train_epochs"], distil["weight_decay"]) == (
        2e-4,
        5,
        0.01,
    )
    assert distil["per_device_train_batch_size"] == 8  # the 2023 default, written out
    assert full.plan("flan-t5-base").args["learning_rate"] == 1e-5
    assert full.plan("flan-t5-base", "lora").args["learning_rate"] == 1e-3
    falcon = full.plan("falcon-7b", "qlora")
    assert set(falcon.lora.target_modules) == {
        "query_key_value",
        "dense",
        "dense_h_to_4h",
        "dense_4h_to_h",
    }
    q = smoke.plan("falcon-7b", "qlora").quantization
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float32  # the profile's, not the document's fp16
    assert not smoke.plan("distilgpt2", "qlora").quantization.bnb_4bit_use_double_quant
    assert smoke.plan("distilgpt2", "lora").lora.target_modules is None  # peft's default


def _rows(*pairs):
    return Dataset.from_list(
        [
            {"id": str(i), "dialogue": d, "summary": s, "references": [s]}
            for i, (d, s) in enumerate(pairs)
        ]
    )


def test_prepare_cuts_long_dialogues_keeps_summaries_and_warns(smoke):
    _, tok = train.load_model(smoke.plan("distilgpt2"))
    long = "Customer: " + "my parcel is late again and again " * 300
    ds = DatasetDict(
        train=_rows(("Customer: hi\nAgent: hello", "Short summary."), (long, "Customer waits."))
    )
    with pytest.warns(UserWarning, match=r"1 of 2 dialogues were cut"):
        pairs = train.prepare(ds, TEMPLATE, tok, max_length=128)
    row = pairs["train"][1]
    assert row["completion"] == TEMPLATE.completion(
        "Customer waits."
    )  # summary and end marker survive
    assert row["prompt"].startswith("### Instruction:") and row["prompt"].endswith(
        "\n\n### Summary:"
    )
    assert len(tok(row["prompt"] + row["completion"]).input_ids) <= 128
    assert set(pairs["train"].column_names) == {"prompt", "completion"}


def test_prepare_raises_when_nothing_fits(smoke):
    _, tok = train.load_model(smoke.plan("distilgpt2"))
    ds = DatasetDict(train=_rows(("Customer: hi", "word " * 200)))
    with warnings.catch_warnings(), pytest.raises(ValueError, match="no usable train example"):
        warnings.simplefilter("ignore")
        train.prepare(ds, TEMPLATE, tok, max_length=64)


def test_finetune_refuses_an_encoder_decoder(smoke, tweetsumm):
    with pytest.raises(ValueError, match="encoder-decoder.*Seq2SeqTrainer"):
        train.finetune(smoke.plan("flan-t5-base", "lora"), tweetsumm, template=TEMPLATES["flan_t5"])


def test_full_finetune_drops_the_loss_and_trains_everything(smoke, tweetsumm):
    run = train.finetune(smoke.plan("distilgpt2"), tweetsumm, template=TEMPLATE)
    assert run.trainable_params == run.total_params > 0
    assert run.losses[-1] < run.losses[0] * 0.8
    assert run.memory_kind == "cpu_rss" and run.seconds > 0 and run.peak_memory_mb > 0
    assert any("eval_loss" in h for h in run.history)
    assert "distilgpt2 full" in str(run)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapters_train_a_small_share(smoke, tweetsumm, method):
    plan = smoke.plan("llama-2-7b", method, max_steps=12)
    run = train.finetune(plan, tweetsumm, template=TEMPLATE)
    assert 0 < run.trainable_params < run.total_params / 5
    assert run.losses[-1] < run.losses[0]
    if method == "qlora":
        assert any(type(m).__name__ == "Linear4bit" for m in run.model.modules())
    # 000 names no target layers, so peft's default for Llama applies: the query and value projections.
    adapted = {
        n.split(".lora_")[0].split(".")[-1]
        for n, p in run.model.named_parameters()
        if p.requires_grad
    }
    assert adapted == {"q_proj", "v_proj"}


def test_completion_only_labels_mask_the_prompt(smoke, tweetsumm):
    from trl import SFTConfig, SFTTrainer

    model, tok = train.load_model(smoke.plan("distilgpt2"))
    pairs = train.prepare(tweetsumm, TEMPLATE, tok, max_length=384)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir="/tmp/t", **smoke.plan("distilgpt2", eval_strategy="no").args),
        train_dataset=pairs["train"],
        processing_class=tok,
    )
    row = trainer.train_dataset[0]
    prompt_len = len(tok(pairs["train"][0]["prompt"]).input_ids)
    batch = trainer.data_collator([row])
    labels = batch["labels"][0]
    assert (labels[:prompt_len] == -100).all() and (labels[prompt_len:] != -100).any()


def test_resume_continues_from_the_last_checkpoint_with_the_whole_history(smoke, tweetsumm):
    with pytest.raises(FileNotFoundError, match="no checkpoint-\\* folder.*save_strategy"):
        train.finetune(smoke.plan("phi-2", "lora"), tweetsumm, template=TEMPLATE, resume=True)
    saving = {"save_strategy": "steps", "save_steps": 4, "eval_strategy": "no", "logging_steps": 1}
    interrupted = smoke.plan("phi-2", "lora", max_steps=4, **saving)
    train.finetune(interrupted, tweetsumm, template=TEMPLATE)  # its last checkpoint is step 4
    whole = smoke.plan("phi-2", "lora", max_steps=8, **saving)
    run = train.finetune(whole, tweetsumm, template=TEMPLATE, resume=True)
    assert [h["step"] for h in run.history if "loss" in h] == list(range(1, 9))
