"""tutorlib.train on the tiny CPU stand-ins: every method learns, masks are exact, adapters round-trip."""

from __future__ import annotations

import json

import bitsandbytes as bnb
import pytest
import torch
from datasets import Dataset, DatasetDict
from peft import PeftModel, get_peft_model
from trl import SFTConfig

from tutorlib import memory, profile, templates, train

DIALOGUE = "Customer: my phone is broken{}.\nAgent: please restart it and DM us."
SUMMARY = "Customer has a broken phone. Agent says to restart it."

# A few short, steps and a high learning rate: enough for a tiny random model to move its loss.
QUICK = {"max_steps": 6, "learning_rate": 5e-3, "eval_steps": 3, "logging_steps": 1}


def rows(n: int, *, vary: bool = False) -> list[dict[str, str]]:
    """n dialogue/summary rows; with vary=True the dialogues differ in length (so batches need padding)."""
    return [
        {"id": str(i), "dialogue": DIALOGUE.format(" really" * i if vary else ""), "summary": SUMMARY}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def smoke() -> profile.Profile:
    return profile.detect("smoke")


@pytest.fixture(scope="module")
def data() -> DatasetDict:
    return DatasetDict(train=Dataset.from_list(rows(8)), validation=Dataset.from_list(rows(2)))


@pytest.mark.parametrize(
    ("method", "model", "layer"),
    [
        ("full", "distilgpt2", None),
        ("lora", "llama-2-7b", None),
        ("lora-8bit", "falcon-7b", bnb.nn.Linear8bitLt),
        ("qlora", "phi-2", bnb.nn.Linear4bit),
        ("qlora", "distilgpt2", bnb.nn.Linear4bit),  # GPT-2's Conv1D layers quantized, evaluated mid-run
    ],
)
def test_every_method_lowers_the_training_loss(smoke, data, tmp_path, method, model, layer):
    result = train.finetune(
        model, data, method=method, template="tweetsumm", profile=smoke, output_dir=tmp_path, **QUICK
    )
    assert result.final_loss < result.initial_loss
    assert any("eval_loss" in h for h in result.history)  # the validation split was evaluated
    assert result.memory_kind == "cpu_rss" and result.peak_memory_mb > 0 and result.seconds > 0
    if method == "full":
        assert result.trainable_params == result.total_params
        assert not isinstance(result.model, PeftModel)
    else:
        assert 0 < result.trainable_params < result.total_params
        assert isinstance(result.model, PeftModel)
    if layer is not None:
        assert any(isinstance(m, layer) for m in result.model.modules())
    assert result.model.config.use_cache is True  # switched back on for generation
    record = json.loads(json.dumps(result.settings))  # ready for a results record
    assert record["method"] == method and record["learning_rate"] == QUICK["learning_rate"]
    assert (record["lora"] is None) == (method == "full")


def test_completion_only_labels_mask_exactly_the_prompt(smoke):
    trainer = train.build_trainer(
        "distilgpt2",
        Dataset.from_list(rows(4, vary=True)),
        method="lora",
        template="tweetsumm",
        profile=smoke,
        packing=False,
    )
    tok = trainer.processing_class
    for row in trainer.train_dataset:
        prompt_ids = tok(row["prompt"])["input_ids"]
        n = len(prompt_ids)
        assert row["input_ids"][:n] == prompt_ids
        assert row["labels"][:n] == [-100] * n
        assert row["labels"][n:] == row["input_ids"][n:]
        assert row["labels"][-1] == tok.eos_token_id  # trl appends EOS to the completion
        assert tok.decode(row["input_ids"][n:]).strip().startswith(SUMMARY)

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for i, row in enumerate(trainer.train_dataset):
        n, length = len(tok(row["prompt"])["input_ids"]), len(row["input_ids"])
        labels, mask = batch["labels"][i], batch["attention_mask"][i]
        assert (labels[:n] == -100).all() and (labels[length:] == -100).all() and not mask[length:].any()
        assert (labels[n:length] != -100).all()


def test_packing_keeps_the_completion_mask(smoke):
    ds = Dataset.from_list(rows(4, vary=True))
    plain = train.build_trainer(
        "distilgpt2", ds, method="lora", template="tweetsumm", profile=smoke, packing=False
    )
    packed = train.build_trainer(
        "distilgpt2", ds, method="lora", template="tweetsumm", profile=smoke, packing=True
    )
    assert packed.args.packing and len(packed.train_dataset) < len(plain.train_dataset)
    batch = packed.data_collator(list(packed.train_dataset))
    assert "attention_mask" not in batch  # padding-free: one flat row, examples separated by position_ids
    completion_tokens = sum(sum(label != -100 for label in row["labels"]) for row in plain.train_dataset)
    assert (batch["labels"] != -100).sum().item() == completion_tokens
    assert (batch["position_ids"] == 0).sum().item() == len(plain.train_dataset)


def test_whole_text_mode_takes_loss_everywhere_but_padding(smoke):
    trainer = train.build_trainer(
        "distilgpt2",
        Dataset.from_list(rows(4, vary=True)),
        method="full",
        template="tweetsumm",
        profile=smoke,
        completion_only=False,
        fast=False,
    )
    assert "text" in trainer.train_dataset.column_names
    for row in trainer.train_dataset:
        assert row["labels"] == row["input_ids"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert ((batch["labels"] == -100) == (batch["attention_mask"] == 0)).all()
    assert (batch["attention_mask"] == 0).any()  # the rows differ in length, so there is padding


def test_saved_adapter_reloads_merges_and_matches(smoke, data, tmp_path):
    result = train.finetune(
        "llama-2-7b",
        data,
        method="lora",
        template="tweetsumm",
        profile=smoke,
        output_dir=tmp_path / "run",
        **QUICK,
    )
    adapter = result.save_adapter(tmp_path / "adapter")
    prompts = [templates.TEMPLATES["tweetsumm"].prompt(DIALOGUE.format(""))]

    reloaded, tok = train.load_adapter("llama-2-7b", adapter, profile=smoke)
    same = train.compare_logits(result.model, reloaded, tok, prompts)
    assert same["max_abs_diff"] <= 1e-6 and same["top1_agreement"] == 1.0

    merged, _ = train.merge("llama-2-7b", adapter, profile=smoke)
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in name for name, _ in merged.named_modules())
    folded = train.compare_logits(reloaded, merged, tok, prompts)
    assert folded["max_abs_diff"] < 1e-4 and folded["top1_agreement"] == 1.0

    base, _ = train.load_model("llama-2-7b", profile=smoke)
    assert (
        train.compare_logits(base, merged, tok, prompts)["max_abs_diff"] > 1e-3
    )  # the adapter did change it

    on_4bit, _ = train.load_adapter("llama-2-7b", adapter, profile=smoke, quantized=True)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in on_4bit.modules())
    drift = train.compare_logits(on_4bit, merged, tok, prompts)
    assert 0 < drift["mean_abs_diff"] <= drift["max_abs_diff"] and 0 <= drift["top1_agreement"] <= 1


EXPECTED_TARGETS = {
    "distilgpt2": ["c_attn", "c_fc", "c_proj"],
    "llama-2-7b": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "falcon-7b": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "phi-2": ["dense", "fc1", "fc2", "k_proj", "q_proj", "v_proj"],
    "flan-t5-base": ["k", "o", "q", "v", "wi_0", "wi_1", "wo"],
}


@pytest.mark.parametrize("name", list(EXPECTED_TARGETS))
def test_find_target_modules(smoke, name):
    model, _ = train.load_model(name, profile=smoke)
    assert train.find_target_modules(model) == EXPECTED_TARGETS[name]


def test_find_target_modules_sees_through_quantization_and_peft(smoke):
    model, _ = train.load_model("phi-2", profile=smoke, method="qlora")
    assert train.find_target_modules(model) == EXPECTED_TARGETS["phi-2"]
    wrapped = get_peft_model(model, train.LORA_PRESETS["phi-2"]())
    assert train.find_target_modules(wrapped) == EXPECTED_TARGETS["phi-2"]


def test_resume_continues_from_the_last_checkpoint(smoke, data, tmp_path):
    common = {
        "method": "lora",
        "template": "tweetsumm",
        "profile": smoke,
        "output_dir": tmp_path,
        "logging_steps": 1,
    }
    first = train.finetune("distilgpt2", data, max_steps=4, save_steps=2, **common)
    assert max(h["step"] for h in first.history) == 4
    assert (tmp_path / "checkpoint-4").is_dir()
    second = train.finetune("distilgpt2", data, max_steps=6, save_steps=2, resume=True, **common)
    steps = [h["step"] for h in second.history if "loss" in h]
    assert steps == [5, 6]
    assert (tmp_path / "checkpoint-6").is_dir()


def test_resume_without_a_checkpoint_says_so(smoke, data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.finetune(
            "distilgpt2",
            data,
            method="lora",
            template="tweetsumm",
            profile=smoke,
            output_dir=tmp_path,
            resume=True,
        )


def test_out_of_memory_inside_finetune_is_caught_by_attempt(smoke, data, tmp_path):
    budget = memory.TensorBudget(budget_mb=0.5)  # the stand-in's weights alone need more
    outcome = memory.attempt(
        lambda: train.finetune(
            "distilgpt2",
            data,
            method="full",
            template="tweetsumm",
            profile=smoke,
            output_dir=tmp_path,
            callbacks=[budget],
        )
    )
    assert not outcome.ok and outcome.result is None
    assert "SimulatedOutOfMemory" in outcome.error and budget.peak_mb > 0.5


@pytest.mark.parametrize("method", ["full", "lora"])
def test_seq2seq_lowers_the_loss(smoke, tmp_path, method):
    data = DatasetDict(train=Dataset.from_list(rows(8)), validation=Dataset.from_list(rows(2)))
    result = train.finetune_seq2seq(
        "flan-t5-base", data, method=method, template="flan_t5", profile=smoke, output_dir=tmp_path, **QUICK
    )
    assert result.final_loss < result.initial_loss
    assert any("eval_loss" in h for h in result.history)
    assert (result.trainable_params < result.total_params) == (method == "lora")


def test_unknown_or_renamed_fields_are_named(smoke, data):
    call = {"method": "lora", "template": "tweetsumm", "profile": smoke}
    with pytest.raises(TypeError, match="'lerning_rate'.*learning_rate"):
        train.finetune("distilgpt2", data, lerning_rate=1e-3, **call)
    with pytest.raises(TypeError, match="'evaluation_strategy'.*eval_strategy"):
        train.finetune("distilgpt2", data, evaluation_strategy="steps", **call)
    with pytest.raises(TypeError, match="'max_seq_length'.*max_length"):
        train.finetune("distilgpt2", data, max_seq_length=512, **call)


def test_bad_arguments_are_refused(smoke, data):
    with pytest.raises(ValueError, match="full, lora, lora-8bit, qlora"):
        train.finetune("distilgpt2", data, method="prefix", template="tweetsumm", profile=smoke)
    with pytest.raises(ValueError, match="finetune_seq2seq"):
        train.finetune("flan-t5-base", data, method="lora", template="flan_t5", profile=smoke)
    with pytest.raises(ValueError, match="fp16"):
        train.finetune_seq2seq(
            "flan-t5-base", data, method="full", template="flan_t5", profile=smoke, fp16=True
        )
    with pytest.raises(ValueError, match="completion_only"):
        text_only = Dataset.from_list([{"text": "hello"}])
        train.finetune("distilgpt2", text_only, method="lora", template="tweetsumm", profile=smoke)


def test_settings_stack_document_fast_profile_overrides(smoke, tmp_path):
    ds = Dataset.from_list(rows(2))
    call = {"method": "lora", "template": "tweetsumm", "profile": smoke}
    expected = {**train.DOCUMENT_SETTINGS["distilgpt2"], **smoke.train_args()}  # the profile wins
    document = train.build_trainer("distilgpt2", ds, fast=False, **call).args
    for key in (
        "learning_rate",
        "weight_decay",
        "optim",
        "max_steps",
        "max_length",
        "per_device_train_batch_size",
    ):
        assert getattr(document, key) == expected[key], key
    assert not document.packing and not document.activation_checkpointing
    assert document.model_init_kwargs is None  # consumed by load_model, so trl does not warn about it
    fast = train.build_trainer("distilgpt2", ds, learning_rate=1e-3, **call).args
    assert fast.optim == "adamw_torch_fused" and fast.learning_rate == 1e-3  # an override beats the profile
    assert not fast.packing and fast.train_sampling_strategy == "group_by_length"
    assert fast.use_cpu and not fast.bf16 and not fast.fp16 and fast.report_to == []
    assert train.build_trainer("llama-2-7b", ds, **call).args.activation_checkpointing
    given = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, activation_checkpointing=False, weight_decay=0.5
    )
    args = train.build_trainer("distilgpt2", ds, sft_config=given, warmup_steps=2, **call).args
    assert (args.weight_decay, args.warmup_steps, args.max_steps) == (0.5, 2, smoke.train_args()["max_steps"])
    assert given.warmup_steps == 0 and given.max_steps == -1  # the caller's config is copied, not changed


def test_presets_follow_the_documents(smoke):
    falcon = train.LORA_PRESETS["falcon-7b"]()
    assert (falcon.r, falcon.lora_alpha, falcon.lora_dropout) == (16, 32, 0.1)
    assert set(falcon.target_modules) == set(EXPECTED_TARGETS["falcon-7b"])
    assert set(train.LORA_PRESETS["phi-2"]().target_modules) == {"q_proj", "k_proj", "v_proj", "dense"}
    assert train.LORA_PRESETS["distilgpt2"]().target_modules is None  # peft's default, as in document 000
    qlora = train.quantization_config("qlora", "falcon-7b", profile=smoke)
    assert qlora.bnb_4bit_use_double_quant and qlora.bnb_4bit_compute_dtype == torch.float32
    assert not train.quantization_config("qlora", "distilgpt2", profile=smoke).bnb_4bit_use_double_quant
    document = train.quantization_config("qlora", "phi-2", profile=smoke, fast=False)
    assert document.bnb_4bit_compute_dtype == torch.float16 and not document.bnb_4bit_use_double_quant
    assert train.default_preset("meta-llama/Llama-2-7b-hf") == "llama-2-7b"
