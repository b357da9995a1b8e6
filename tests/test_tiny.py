"""Offline stand-ins: the real architecture at toy size, the family's tokenizer conventions, the disk cache."""

from __future__ import annotations

import logging
import re
import threading

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer
from transformers.pytorch_utils import Conv1D

from tutorlib import models, tiny
from tutorlib.templates import TEMPLATES

NAMES = list(models.MODELS)
CAUSAL = [n for n in NAMES if not models.spec(n).seq2seq]
TEXT = "Customer: my phone’s screen broke 😞 at 8:45!\nAgent: Sorry, Ann. DM us the order #A12 and we’ll fix it."


@pytest.fixture(scope="session")
def folders():
    """Every stand-in, built once per session in the session's cache (conftest's TUTORLIB_CACHE)."""
    return {name: tiny.build(name) for name in NAMES}


def _load(folders, name):
    return models.auto_class(name).from_pretrained(folders[name]), AutoTokenizer.from_pretrained(
        folders[name]
    )


def _linear_names(model):
    """Leaf names of the layers LoRA can target (`q_proj`, `c_attn`, ...)."""
    layers = (torch.nn.Linear, Conv1D)
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, layers)
    }


@pytest.mark.parametrize("name", NAMES)
def test_stand_in_is_the_real_architecture_at_toy_size(folders, name):
    model, tok = _load(folders, name)
    real = models.on_meta(name)
    assert type(model) is type(real)
    assert _linear_names(model) == _linear_names(real)
    assert set(models.spec(name).lora.get("target_modules", [])) <= _linear_names(model)
    # The saved config is the real one with only the registry's tiny sizes, vocabulary and special ids changed.
    expected = models.config(name, **models.spec(name).tiny).to_dict()
    loaded = model.config.to_dict()
    ignored = {"vocab_size", "architectures", "dtype", "_name_or_path"}
    changed = {
        k for k in expected.keys() | loaded.keys() if expected.get(k) != loaded.get(k)
    } - ignored
    assert {k for k in changed if not k.endswith("_token_id")} == set()
    assert model.config.vocab_size == len(tok) <= 3000
    counted = sum(p.numel() for p in models.on_meta(model.config).parameters())
    assert sum(p.numel() for p in model.parameters()) == counted < 1_000_000
    enc = tok(TEXT, return_tensors="pt")
    extra = (
        {"decoder_input_ids": torch.tensor([[model.config.decoder_start_token_id]])}
        if real.config.is_encoder_decoder
        else {}
    )
    with torch.no_grad():
        logits = model(**enc, **extra).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_t5_stand_in_has_its_own_lm_head_like_flan_t5(folders):
    t5, _ = _load(folders, "flan-t5-base")
    assert t5.lm_head.weight.data_ptr() != t5.shared.weight.data_ptr()
    assert not torch.equal(t5.lm_head.weight, t5.shared.weight)
    assert (
        t5.config.is_gated_act and t5.config.decoder_start_token_id == t5.config.pad_token_id == 0
    )


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_round_trips_with_the_family_special_tokens(folders, name):
    model, tok = _load(folders, name)
    ids = tok(TEXT).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == TEXT
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert (model.config.eos_token_id, model.config.pad_token_id) == (
        tok.eos_token_id,
        tok.pad_token_id,
    )
    family = models.spec(name).family
    if family in ("gpt2", "phi", "falcon"):
        assert (
            tok.eos_token == "<|endoftext|>"
            and tok.pad_token is None
            and tok.eos_token_id not in ids
        )
        assert tok.bos_token == (None if family == "falcon" else "<|endoftext|>")
    elif family == "llama":
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (
            0,
            1,
            2,
        ) and tok.pad_token is None
        assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    else:
        assert (tok.pad_token, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (
            "<pad>",
            0,
            1,
            2,
        )
        assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    assert tok.model_max_length == {"gpt2": 1024, "t5": 512}.get(family, 2048)


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_template_headers_and_markers_are_whole_tokens(folders, template):
    # A byte-level tokenizer never merges across its pre-tokenizer's pieces ("###", " Summary", ":"), so
    # "one token per piece" is as few as they can be; without the templates in the corpus they split.
    tok = AutoTokenizer.from_pretrained(folders["llama-2-7b"])
    t = TEMPLATES[template]
    pieces = [
        line
        for part in re.split(r"\{\w+\}", t.layout)
        for line in part.splitlines()
        if line.strip()
    ]
    for text in pieces + [t.completion("x").removeprefix(" x")] * bool(t.end_marker):
        words = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        assert len(tok.tokenize(text)) == len(words), (text, tok.tokenize(text))


@pytest.mark.parametrize("template", [t for t in TEMPLATES if not TEMPLATES[t].seq2seq])
@pytest.mark.parametrize("name", CAUSAL)
def test_prompt_tokens_are_a_prefix_of_prompt_plus_completion(folders, name, template):
    # trl's completion-only loss masks the prompt by its token count; that needs this prefix property.
    tok = AutoTokenizer.from_pretrained(folders[name])
    t = TEMPLATES[template]
    prompt = tok(t.prompt(TEXT)).input_ids
    full = tok(
        t.prompt(TEXT) + t.completion("Customer's screen broke. Agent will fix it.")
    ).input_ids
    assert full[: len(prompt)] == prompt and len(full) > len(prompt)


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss_on_a_repeated_batch(folders, name):
    model, tok = _load(folders, name)
    model.train()
    batch = tok(TEXT, return_tensors="pt")
    target = "The screen broke. Agent will fix it." if models.spec(name).seq2seq else TEXT
    labels = tok(target, return_tensors="pt").input_ids
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0] - 0.1, losses


def test_second_build_is_a_cache_hit_named_after_the_model(folders, caplog):
    folder = folders["distilgpt2"]
    assert folder.name.startswith("distilgpt2-") and folders["llama-2-7b"].name.startswith(
        "llama-2-7b-"
    )
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="tutorlib.tiny"):
        assert tiny.build("distilgpt2") == tiny.build("distilbert/distilgpt2") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [r for r in caplog.records if "building" in r.getMessage()]


def test_weights_come_from_a_fixed_seed_and_leave_the_global_rng_alone(folders, tmp_path):
    state = torch.random.get_rng_state()
    again = tiny.build("phi-2", tmp_path)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again != folders["phi-2"] and again.name == folders["phi-2"].name
    first, second = (
        load_file(folders["phi-2"] / "model.safetensors"),
        load_file(again / "model.safetensors"),
    )
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_new_sample_data_builds_a_new_folder_with_its_words(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORLIB_HOME", str(tmp_path / "home"))  # no data/ at all: templates alone
    cache = tmp_path / "cache"
    empty = tiny.build("distilgpt2", cache)
    data = tmp_path / "home" / "data" / "toy"
    data.mkdir(parents=True)
    rows = [
        f'{{"id": "x{i}", "turns": [{{"text": "Ask Zorblax Quendor {i}"}}]}}' for i in range(40)
    ]
    (data / "a.jsonl").write_text("\n".join(rows), encoding="utf-8")
    hidden = tmp_path / "home" / "data" / ".ipynb_checkpoints"
    hidden.mkdir()
    (hidden / "old.jsonl").write_text(
        "\n".join(['{"text": "Ask Vexmorrin"}'] * 40), encoding="utf-8"
    )
    with_data = tiny.build("distilgpt2", cache)
    assert with_data != empty and with_data.parent == empty.parent
    tok = AutoTokenizer.from_pretrained(with_data)
    assert tok.tokenize(" Zorblax Quendor") == ["ĠZorblax", "ĠQuendor"]
    assert len(tok.tokenize(" Vexmorrin")) > 1  # hidden folders are not sample data
    assert len(AutoTokenizer.from_pretrained(empty).tokenize(" Zorblax Quendor")) > 2
    (data / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        tiny.build("distilgpt2", cache)


def test_concurrent_builds_agree_and_leave_no_staging_folders(tmp_path):
    results, errors = [], []

    def work():
        try:
            results.append(tiny.build("llama-2-7b", tmp_path))
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [results[0].name]


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'gpt-5'.*distilgpt2.*phi-2"):
        tiny.build("gpt-5", tmp_path)
