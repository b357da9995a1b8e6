"""`full` reads each dataset's hub copy offline (the datasets half of tests/full_hub.py), and the caps
that `make full-check` runs `full` with."""

from __future__ import annotations

import datasets
import full_hub  # tests/ is on sys.path: pytest puts a test file's folder there
import pytest
import torch

from tutorlib import data, models, paths
from tutorlib.profile import Profile, detect

FULL = Profile(name="full", device="cpu", dtype=torch.float32)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A HF_HOME with no model and every hub dataset; datasets reads this cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    full_hub.build(tmp_path, names=())
    return tmp_path


def test_tweetsumm_hub_copy_maps_roles_and_keeps_one_summary(hub):
    hub_copy, released = (
        data.load("tweetsumm", profile=FULL),
        data.load("tweetsumm", paths.data_dir() / "tweetsumm"),
    )
    rows = full_hub.hub_rows("tweetsumm")
    assert data.sizes(hub_copy) == {
        s: len(rows[h]) for s, h in [("train", "train"), ("validation", "val"), ("test", "test")]
    }
    # The same conversations as the released files, cleaned the same way: roles became Customer / Agent.
    for split in data.SPLITS:
        assert set(hub_copy[split]["dialogue"]) == set(released[split]["dialogue"])
    first = hub_copy["test"][0]
    assert first["dialogue"].startswith("Customer: ") and "\nAgent: " in first["dialogue"]
    assert "@" not in first["dialogue"] and "https://" not in first["dialogue"]
    assert first["references"] == [rows["test"][0]["abstractive_summary"]]
    assert hub_copy["test"][0]["id"] == rows["test"][0]["conversation_id"]


def test_dialogsum_hub_copy_merges_the_test_references(hub):
    hub_copy, released = (
        data.load("dialogsum", profile=FULL),
        data.load("dialogsum", paths.data_dir() / "dialogsum"),
    )
    assert data.sizes(hub_copy) == data.sizes(released)
    assert hub_copy["test"]["references"] == released["test"]["references"]
    assert all(len(refs) == 3 for refs in hub_copy["test"]["references"])
    assert hub_copy["train"]["summary"] == released["train"]["summary"]


def test_samsum_hub_copy_reads_numeric_ids_as_text(hub):
    hub_copy, released = (
        data.load("samsum", profile=FULL),
        data.load("samsum", paths.data_dir() / "samsum"),
    )
    assert data.sizes(hub_copy) == data.sizes(released)
    assert hub_copy["test"]["id"] == released["test"]["id"] and hub_copy["test"]["id"][0].isdigit()
    assert hub_copy["validation"]["dialogue"] == released["validation"]["dialogue"]


def _with_roles(roles: dict[str, str]) -> dict:
    rows = full_hub.hub_rows("tweetsumm")
    for split in rows.values():
        for rec in split:
            for turn in rec["conversation"]:
                turn["role"] = roles[turn["role"]]
    return rows


def test_tweetsumm_role_labels_of_other_copies_are_mapped(hub):
    full_hub.write_dataset(
        hub, "tweetsumm", _with_roles({"customer": " User", "agent": "Assistant"})
    )
    assert (
        data.load("tweetsumm", profile=FULL)["test"]["dialogue"]
        == data.load("tweetsumm", paths.data_dir() / "tweetsumm")["test"]["dialogue"]
    )


def test_tweetsumm_unknown_role_is_an_error_naming_it(hub):
    full_hub.write_dataset(
        hub, "tweetsumm", _with_roles({"customer": "customer", "agent": "moderator"})
    )
    with pytest.raises(
        ValueError,
        match=r"shivanandmn/tweet-sum-filtered \[train\], row 0: unknown speaker "
        r"role 'moderator'; expected a customer role",
    ):
        data.load("tweetsumm", profile=FULL)


def test_caps_shorten_full_only(monkeypatch):
    smoke = Profile(name="smoke", device="cpu", dtype=torch.float32)
    assert FULL.examples("test", 50) == 50 and "max_steps" not in FULL.training("distilgpt2")
    monkeypatch.setenv("TUTORLIB_MAX_STEPS", "3")
    monkeypatch.setenv("TUTORLIB_MAX_EXAMPLES", "2")
    full = detect("full")  # the caps are read once, here
    assert [full.examples("test", n) for n in (50, None, 1, 0)] == [2, 2, 1, 0]
    args = full.plan("llama-2-7b").args
    assert args["max_steps"] == 3 and full.steps(200) == 3
    assert args["per_device_train_batch_size"] == args["per_device_eval_batch_size"] == 2
    phi = full.plan("phi-2").args["per_device_train_batch_size"]
    assert phi == models.spec("phi-2").training["per_device_train_batch_size"] == 1  # never raised
    assert smoke.training("distilgpt2")["max_steps"] != 3 and smoke.examples("test", 50) != 2
    assert detect("smoke").max_steps is None  # the caps are full's


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_cap_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("TUTORLIB_MAX_STEPS", value)
    expected = f"TUTORLIB_MAX_STEPS='{value}': expected a positive whole number"
    with pytest.raises(ValueError, match=expected):
        detect("full")
