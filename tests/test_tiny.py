"""Offline stand-in models: architecture, tokenizer conventions, training, and the on-disk cache."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    FalconForCausalLM,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    PhiForCausalLM,
    T5ForConditionalGeneration,
)

from tutorlib import tiny
from tutorlib.profile import canonical
from tutorlib.templates import TEMPLATES

EXPECTED = {
    "distilgpt2": GPT2LMHeadModel,
    "llama-2-7b": LlamaForCausalLM,
    "falcon-7b": FalconForCausalLM,
    "phi-2": PhiForCausalLM,
    "flan-t5-base": T5ForConditionalGeneration,
}
FAMILY = {
    "distilgpt2": "gpt2",
    "llama-2-7b": "llama",
    "falcon-7b": "falcon",
    "phi-2": "phi",
    "flan-t5-base": "t5",
}
CAUSAL = [n for n in EXPECTED if n != "flan-t5-base"]
MARKER_TEXT = "### Summary: Customer’s phone broke 😞. Agent sends a fix.\n <END_OF_SECOND_SENTENCE>"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tiny.build_all(tmp_path_factory.mktemp("tiny-cache"))


def _folder(folders, name):
    return folders[canonical(name)]


def _load(folders, name):
    auto = AutoModelForSeq2SeqLM if name == "flan-t5-base" else AutoModelForCausalLM
    return auto.from_pretrained(_folder(folders, name)), AutoTokenizer.from_pretrained(_folder(folders, name))


def _loss(model, tok, name):
    batch = tok(["Customer: my bill is wrong.\nAgent: Please DM us.", "Ann: lunch?\nBob: sure, at noon."])
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in batch.input_ids], batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in batch.attention_mask], batch_first=True)
    if name == "flan-t5-base":
        labels = tok(["The bill is wrong.", "Lunch at noon."], padding=True, return_tensors="pt").input_ids
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss


def test_build_all_covers_the_five_models(folders):
    assert sorted(folders) == sorted(canonical(n) for n in EXPECTED)
    for folder in folders.values():
        for file in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
            assert (folder / file).is_file(), f"{folder.name} lacks {file}"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loads_as_the_real_class_and_runs_forward(folders, name):
    model, tok = _load(folders, name)
    assert type(model) is EXPECTED[name]
    assert model.config.vocab_size == len(tok)
    assert (model.config.eos_token_id, model.config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    enc = tok(MARKER_TEXT, return_tensors="pt")
    kwargs = {"decoder_input_ids": torch.tensor([[tok.pad_token_id]])} if name == "flan-t5-base" else {}
    with torch.no_grad():
        logits = model(**enc, **kwargs).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_structural_choices_of_each_family(folders):
    gpt2, _ = _load(folders, "distilgpt2")
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight  # tied
    assert type(gpt2.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    llama, _ = _load(folders, "llama-2-7b")
    assert llama.lm_head.weight.data_ptr() != llama.model.embed_tokens.weight.data_ptr()
    assert type(llama.model.norm).__name__ == "LlamaRMSNorm"
    falcon, _ = _load(folders, "falcon-7b")
    cfg = falcon.config
    assert cfg.multi_query and cfg.parallel_attn and not cfg.bias and not cfg.new_decoder_architecture
    assert all(m.bias is None for m in falcon.modules() if isinstance(m, torch.nn.Linear))
    phi, _ = _load(folders, "phi-2")
    assert phi.config.rope_parameters["partial_rotary_factor"] == 0.4
    names = {n.rsplit(".", 1)[-1] for n, _ in phi.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"} <= names
    t5, _ = _load(folders, "flan-t5-base")
    assert t5.config.is_gated_act and t5.config.decoder_start_token_id == 0
    assert not torch.equal(t5.lm_head.weight, t5.shared.weight)  # flan-t5 has its own lm_head
    assert t5.encoder.block[0].layer[0].SelfAttention.has_relative_attention_bias


@pytest.mark.parametrize("name", list(EXPECTED))
def test_training_changes_weights_and_lowers_loss_on_a_repeated_batch(folders, name):
    model, tok = _load(folders, name)
    model.train()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []
    for _ in range(6):
        loss = _loss(model, tok, name)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if len(losses) == 1:
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
            assert changed, "one optimizer step changed no weight"
    assert losses[-1] < losses[0] - 0.1, losses


def test_weights_come_from_a_fixed_seed_and_leave_the_global_rng_alone(folders, tmp_path):
    state = torch.random.get_rng_state()
    again = tiny.build("phi-2", tmp_path)
    assert torch.equal(torch.random.get_rng_state(), state)
    first = load_file(_folder(folders, "phi-2") / "model.safetensors")
    second = load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_second_build_is_a_cache_hit(folders, caplog):
    folder = _folder(folders, "distilgpt2")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="tutorlib.tiny"):
        again = tiny.build("distilgpt2", folder.parent.parent)
    assert again == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [r for r in caplog.records if "building" in r.getMessage()]


def test_hub_id_and_logical_name_share_a_folder(folders):
    cache = _folder(folders, "phi-2").parent.parent
    assert tiny.build("microsoft/phi-2", cache) == tiny.build("phi-2", cache) == _folder(folders, "phi-2")


def test_new_sample_data_builds_a_new_folder_with_its_words(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORLIB_HOME", str(tmp_path / "home"))
    cache = tmp_path / "cache"
    empty = tiny.build("distilgpt2", cache)
    data = tmp_path / "home" / "data" / "toy"
    data.mkdir(parents=True)
    # Strings nested at any depth count; a broken file is skipped rather than failing the build;
    # checkpoint copies in hidden folders are ignored.
    rows = [f'{{"id": {i}, "turns": [{{"text": "Ask Zorblax Quendor {i}"}}]}}' for i in range(40)]
    (data / "a.jsonl").write_text("\n".join(rows), encoding="utf-8")
    (data / "broken.json").write_text("{not json", encoding="utf-8")
    hidden = tmp_path / "home" / "data" / ".ipynb_checkpoints"
    hidden.mkdir()
    (hidden / "old.jsonl").write_text("\n".join(['{"text": "Ask Vexmorrin"}'] * 40), encoding="utf-8")
    with_data = tiny.build("distilgpt2", cache)
    assert with_data != empty and with_data.parent == empty.parent
    tok = AutoTokenizer.from_pretrained(with_data)
    assert tok.tokenize(" Zorblax Quendor") == ["ĠZorblax", "ĠQuendor"]
    assert len(tok.tokenize(" Vexmorrin")) > 1  # hidden folders are not sample data
    assert len(AutoTokenizer.from_pretrained(empty).tokenize(" Zorblax Quendor")) > 2


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


@pytest.mark.parametrize("name", list(EXPECTED))
def test_special_tokens_follow_the_real_family(folders, name):
    tok = AutoTokenizer.from_pretrained(_folder(folders, name))
    assert tok.chat_template is None
    ids = tok("Hello there").input_ids
    family = FAMILY[name]
    if family in ("gpt2", "phi", "falcon"):
        assert tok.eos_token == "<|endoftext|>" and tok.pad_token is None
        assert tok.bos_token == (None if family == "falcon" else "<|endoftext|>")
        assert tok.eos_token_id not in ids
    elif family == "llama":
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2) and tok.pad_token is None
        assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    else:
        assert (tok.pad_token, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == ("<pad>", 0, 1, 2)
        assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    assert tok.model_max_length == {"gpt2": 1024, "t5": 512}.get(family, 2048)


@pytest.mark.parametrize("family", sorted(set(FAMILY.values())))
def test_round_trip_keeps_text_with_the_marker(family):
    tok = tiny.tokenizer(family)
    ids = tok(MARKER_TEXT).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == MARKER_TEXT
    assert tok.unk_token_id is None or tok.unk_token_id not in ids


def test_tokenizer_returns_an_independent_copy():
    first = tiny.tokenizer("gpt2")
    first.pad_token = first.eos_token
    assert tiny.tokenizer("gpt2").pad_token is None


@pytest.mark.parametrize("template", ["tweetsumm", "falcon_samsum", "phi2"])
@pytest.mark.parametrize("name", CAUSAL)
def test_prompt_tokens_are_a_prefix_of_prompt_plus_completion(folders, name, template):
    # trl's completion-only loss masks the prompt by its token count; that needs this prefix property.
    tok = AutoTokenizer.from_pretrained(_folder(folders, name))
    t = TEMPLATES[template]
    dialogue = "Customer: my card was charged twice!\nAgent: Sorry about that, a refund is on its way."
    prompt = tok(t.prompt(dialogue)).input_ids
    full = tok(t.text(dialogue, "Customer was charged twice. Agent issued a refund.")).input_ids
    assert full[: len(prompt)] == prompt and len(full) > len(prompt)


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model name 'gpt-5'.*distilgpt2.*phi-2"):
        tiny.build("gpt-5", tmp_path)
    with pytest.raises(ValueError, match=r"unknown model family 'bert'.*falcon, gpt2, llama, phi, t5"):
        tiny.tokenizer("bert")
