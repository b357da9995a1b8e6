"""Results records on disk, the documents' reference numbers (reference.csv), and the side-by-side tables."""

import json
import os
from types import SimpleNamespace

import pytest

from tutorlib import paths, results

SCHEMA = {
    "experiment",
    "notebook",
    "profile",
    "model",
    "stand_in",
    "method",
    "device",
    "dtype",
    "train_seconds",
    "peak_memory_mb",
    "memory_kind",
    "judge",
    "scores",
    "extra",
    "library_versions",
    "created_at",
}
CRITERIA = ("customer", "agent", "two_sentences")
SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _own_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORLIB_RESULTS", str(tmp_path / "results"))


@pytest.fixture
def profile():
    return SimpleNamespace(
        name="smoke", device="cuda", dtype="torch.float16", gpu_name="Tesla V100-SXM2-16GB"
    )


def _write(profile, experiment="distilgpt2_lora", **overrides):
    args = dict(
        notebook="01_tweetsumm_distilgpt2.ipynb",
        profile=profile,
        model="distilgpt2",
        method="lora",
        scores={"total": 58, "customer": 9, "agent": 7, "two_sentences": 42},
        train_seconds=414.0,
        peak_memory_mb=1234.5,
        memory_kind="cuda",
        judge="offline proxy",
        extra={"configuration": "DistilGPT2 LoRA"},
    )
    args.update(overrides)
    return results.record(experiment, **args)


def _set_created_at(path, stamp):
    data = json.loads(path.read_text())
    data["created_at"] = stamp
    path.write_text(json.dumps(data))


# --- records ------------------------------------------------------------------------------------


def test_record_round_trips_with_the_schema(profile):
    path = _write(profile, extra={"configuration": "DistilGPT2 LoRA", "trainable_params": 20})
    assert path == paths.results_dir("smoke") / "distilgpt2_lora.json"
    assert [p.name for p in path.parent.iterdir()] == [
        "distilgpt2_lora.json"
    ]  # no temporary file left
    (loaded,) = results.load_records("smoke")
    assert set(loaded) == SCHEMA
    assert loaded == json.loads(path.read_text())
    assert loaded["device"] == "cuda (Tesla V100-SXM2-16GB)"
    assert loaded["dtype"] == "float16"
    assert loaded["scores"]["two_sentences"] == 42
    assert loaded["extra"] == {"configuration": "DistilGPT2 LoRA", "trainable_params": 20}
    assert "transformers" in loaded["library_versions"]
    assert loaded["created_at"].endswith("+00:00")


def test_load_records_filters_by_notebook_and_profile_oldest_first(profile):
    first = _write(profile, "b_first")
    _write(profile, "a_second", notebook="02_dialogsum_flan_t5.ipynb")
    _set_created_at(first, "2020-01-01T00:00:00+00:00")
    assert [r["experiment"] for r in results.load_records("smoke")] == ["b_first", "a_second"]
    assert [r["experiment"] for r in results.load_records(notebook="02_dialogsum_flan_t5")] == [
        "a_second"
    ]
    assert results.load_records("full") == []


@pytest.mark.parametrize("name", ["Bad Name", "../escape", "", "x.json", "UPPER"])
def test_bad_experiment_names_are_refused(profile, name):
    with pytest.raises(ValueError, match="experiment: String should match pattern"):
        _write(profile, name)


def test_memory_must_say_what_it_measured(profile):
    with pytest.raises(ValueError, match="memory_kind"):
        _write(profile, memory_kind="gpu")
    with pytest.raises(ValueError, match="memory_kind"):
        _write(profile, memory_kind=None)
    path = _write(profile, peak_memory_mb=None, memory_kind=None)
    assert json.loads(path.read_text())["peak_memory_mb"] is None


def _nothing_written():
    folder = paths.results_dir("smoke")
    return not folder.exists() or not any(folder.iterdir())


@pytest.mark.parametrize("var", ["OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_a_record_holding_an_environment_secret_is_refused(profile, monkeypatch, var):
    monkeypatch.setenv(var, SECRET)
    with pytest.raises(ValueError, match=var) as err:
        _write(profile, extra={"configuration": "x", "api": f"key={SECRET}"})
    assert SECRET not in str(err.value)
    assert _nothing_written()
    _write(profile)  # the same record without the secret is written


def test_a_record_holding_a_passed_secret_is_refused(profile):
    judge_key = "judge-key-9876543210"
    with pytest.raises(ValueError, match=r"secrets\[1\]") as err:
        _write(
            profile, judge=f"server with {judge_key}", secrets=["another-long-key-000", judge_key]
        )
    assert judge_key not in str(err.value)
    assert _nothing_written()
    # Placeholders such as "EMPTY" (a local server's key) are too short to be secrets and too common.
    _write(profile, judge="EMPTY", secrets=["EMPTY", None, judge_key])


def test_unreadable_records_are_skipped_with_a_warning_naming_them(profile):
    _write(profile)
    folder = paths.results_dir("smoke")
    good = (folder / "distilgpt2_lora.json").read_text()
    bad = {
        "corrupt.json": "{not json",
        "truncated.json": good[: len(good) // 2],
        "list.json": "[1, 2, 3]",
        "keyless.json": json.dumps({"experiment": "keyless", "profile": "smoke"}),
        "binary.json": b"\xff\xfe\x00garbage",
    }
    for name, content in bad.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.warns(UserWarning) as caught:
        loaded = results.load_records("smoke")
    assert [r["experiment"] for r in loaded] == ["distilgpt2_lora"]
    messages = [str(w.message) for w in caught]
    for name in bad:
        assert any(name in m for m in messages), name
    assert any("Input should be an object" in m for m in messages if "list.json" in m)
    assert any("notebook: Field required" in m for m in messages if "keyless.json" in m)
    with pytest.warns(
        UserWarning
    ) as again:  # the tables still build, and say again what they skipped
        assert list(results.summary_table("smoke")["experiment"]) == ["distilgpt2_lora"]
    assert len(again) == len(bad)


def test_latest_picks_the_newest_per_configuration_and_names_missing_producers(profile, capsys):
    older = _write(profile, "lora_try1", scores={"total": 10})
    newer = _write(profile, "lora_try2", scores={"total": 20})
    _set_created_at(older, "2020-01-01T00:00:00+00:00")
    _write(profile, "base", extra={"configuration": "DistilGPT2 base"})
    producers = {"DistilGPT2 QLoRA": "03_lora_qlora", "DistilGPT2 base": "01_tweetsumm"}
    wanted = ["DistilGPT2 QLoRA", "DistilGPT2 LoRA", "DistilGPT2 full fine-tune", "DistilGPT2 base"]
    picked = results.latest("smoke", wanted, producers)
    assert [r["experiment"] for r in picked] == ["lora_try2", "base"]
    out = capsys.readouterr().out
    assert "DistilGPT2 QLoRA (made by 03_lora_qlora)" in out and "DistilGPT2 full fine-tune" in out
    assert "01_tweetsumm" not in out  # it has a record
    _set_created_at(newer, "2019-01-01T00:00:00+00:00")  # now try1 is the newest
    assert results.latest("smoke", ["DistilGPT2 LoRA"])[0]["experiment"] == "lora_try1"
    os.utime(older)  # touching a file does not reorder records with different times
    assert results.latest("smoke", ["DistilGPT2 LoRA"])[0]["experiment"] == "lora_try1"


def test_summary_table_has_one_line_per_record(profile):
    _write(profile)
    _write(
        profile, "llama_full", model="llama-2-7b", method="full", scores={}, extra={"failed": "OOM"}
    )
    _write(
        profile,
        "flan",
        scores={"rouge1": 0.3, "rougeL": 0.25},
        peak_memory_mb=None,
        memory_kind=None,
    )
    table = results.summary_table("smoke").set_index("experiment")
    assert table.loc["distilgpt2_lora", "main score"] == "total 58"
    assert table.loc["distilgpt2_lora", "train min"] == pytest.approx(6.9)
    assert table.loc["distilgpt2_lora", "peak memory"] == "1234 MB (cuda)"
    assert table.loc["llama_full", "main score"] == "failed (OOM)"
    assert table.loc["flan", "main score"] == "rougeL 0.25"
    assert table.loc["flan", "peak memory"] == "—"


# --- the documents' numbers ------------------------------------------------------------------------


def _published(document, table, configuration, metric):
    ref = results.reference(document, table)
    values = ref[(ref.configuration == configuration) & (ref.metric == metric)]["value"]
    assert len(values) == 1, (document, table, configuration, metric)
    return values.iloc[0]


def test_the_csv_loads_every_document_as_text_and_numbers():
    ref = results.reference()
    assert list(ref.columns) == [
        "document",
        "table",
        "configuration",
        "metric",
        "value",
        "unit",
        "note",
    ]
    assert sorted(set(ref["document"])) == ["000", "001", "002", "003", "004"]
    assert ref["value"].dtype == float
    assert (ref["note"] == "").any() and not ref["note"].isna().any()
    unpublished = ref[ref["value"].isna()]
    assert len(unpublished) and (unpublished["note"] != "").all()  # every gap says why
    assert results.reference("001", "Evaluation")["note"].eq("not published").all()
    assert (
        _published("003", "Model Training Performance", "Phi-2 QLoRA", "total_flos")
        == 1.850993530739712e16
    )
    assert not ref.duplicated(["document", "table", "configuration", "metric"]).any()


def test_reference_rejects_unknown_documents_and_tables():
    with pytest.raises(ValueError, match="no document '999'"):
        results.reference("999")
    with pytest.raises(ValueError, match="Table 1"):  # the message lists the tables that exist
        results.reference("000", "Table 9")
    mine = results.reference()
    mine.loc[0, "value"] = -1.0  # a caller's copy; the data stays as published
    assert results.reference().loc[0, "value"] != -1.0


def test_tweetsumm_criteria_add_up_to_the_table_totals():
    full = sum(
        _published("000", "Fine-tuning DistilGPT-2", "DistilGPT2 full fine-tune", c)
        for c in CRITERIA
    )
    assert full == _published("000", "Table 1", "DistilGPT2 full fine-tune", "total") == 67
    lora = sum(
        _published("000", "Parameter-efficient fine-tuning", "DistilGPT2 LoRA", c) for c in CRITERIA
    )
    assert lora == _published("000", "Table 1", "DistilGPT2 LoRA", "total") == 58
    base = _published("000", "LLama-2-7B", "Llama-2-7B base", "two_sentences") + _published(
        "000", "LLama-2-7B", "Llama-2-7B base", "customer+agent"
    )
    assert base == _published("000", "Table 2", "Llama-2-7B base", "total") == 25.5
    oom = results.reference("000", "Table 2").query("configuration == 'Llama-2-7B full fine-tune'")
    assert oom["value"].isna().all() and oom["note"].eq("failed (OOM)").all()


def test_falcon_and_phi2_numbers_are_consistent_with_each_other():
    section = "Fine-Tuning with Model Quantization and LoRA"
    trainable = _published("002", section, "Falcon-7B QLoRA", "trainable_params")
    total = _published("002", section, "Falcon-7B QLoRA", "total_params")
    assert round(100 * trainable / total, 2) == _published(
        "002", section, "Falcon-7B QLoRA", "trainable_percent"
    )
    log = results.reference("003", "Training log")
    losses = log[log.metric.str.startswith("loss@")]["value"]
    assert len(losses) == 40 and len(log) == 80
    assert list(log.metric[:4]) == ["loss@25", "eval_loss@25", "loss@50", "eval_loss@50"]
    # The reported mean training loss is the mean of the 40 logged losses (to 5 decimals).
    train_loss = _published("003", "Model Training Performance", "Phi-2 QLoRA", "train_loss")
    assert losses.mean() == pytest.approx(train_loss, abs=1e-5)
    # 1000 steps x batch 1 x accumulation 4 samples in train_runtime seconds.
    seconds = _published("003", "Model Training Performance", "Phi-2 QLoRA", "train_seconds")
    per_second = _published(
        "003", "Model Training Performance", "Phi-2 QLoRA", "train_samples_per_second"
    )
    assert 4000 / seconds == pytest.approx(per_second, abs=1e-3)


# --- side by side ------------------------------------------------------------------------------------


def test_side_by_side_shows_the_documents_numbers_and_leaves_missing_runs_empty(profile):
    _write(profile)
    _write(
        profile,
        "llama_full",
        model="llama-2-7b",
        method="full",
        scores={},
        extra={"configuration": "Llama-2-7B full fine-tune", "failed": "OOM"},
    )
    records = results.load_records("smoke")
    header = "this run (smoke, cuda (Tesla V100-SXM2-16GB), judge: offline proxy)"
    table1 = results.side_by_side("000", "Table 1", records).set_index(["configuration", "metric"])
    assert list(table1.columns) == ["unit", "document", header]
    assert table1.loc[("DistilGPT2 LoRA", "total"), "document"] == "58"
    assert table1.loc[("DistilGPT2 LoRA", "total"), header] == 58
    assert table1.loc[("DistilGPT2 LoRA", "train_minutes"), header] == pytest.approx(6.9)
    assert table1.loc[("DistilGPT2 QLoRA", "total"), "document"] == "52"
    assert table1.loc[("DistilGPT2 QLoRA", "total"), header] == ""  # no record: empty, not zero
    table2 = results.side_by_side("000", "Table 2", records).set_index(["configuration", "metric"])
    assert table2.loc[("Llama-2-7B full fine-tune", "total"), "document"] == "failed (OOM)"
    assert table2.loc[("Llama-2-7B full fine-tune", "total"), header] == "failed (OOM)"
    assert table2.loc[("Llama-2-7B LoRA", "total"), "document"] == "131"
    assert table2.loc[("Llama-2-7B LoRA", "total"), header] == ""


def test_side_by_side_reports_unmeasured_metrics_and_an_unlabelled_run(profile):
    _write(
        profile,
        "flan",
        scores={"rouge1": 0.41234567},
        judge=None,
        extra={"configuration": "FLAN-T5 LoRA"},
    )
    table = results.side_by_side("001", "Evaluation", results.load_records("smoke"))
    table = table.set_index(["configuration", "metric"])
    run = "this run (smoke, cuda (Tesla V100-SXM2-16GB))"
    assert table.loc[("FLAN-T5 LoRA", "rouge1"), run] == pytest.approx(0.4123)
    assert table.loc[("FLAN-T5 LoRA", "rouge1"), "document"] == "not published"
    assert table.loc[("FLAN-T5 LoRA", "rouge2"), run] == "not measured"
    assert table.loc[("FLAN-T5 base", "rouge1"), run] == ""
    assert list(results.side_by_side("001", "Evaluation", []).columns)[-1] == "this run"


def test_side_by_side_shows_points_out_of_this_runs_maximum(profile):
    scores = {
        "total": 5,
        "customer": 1,
        "agent": 1,
        "two_sentences": 3,
        "max_total": 12,
        "graded": 4,
    }
    _write(
        profile, "base", method="base", scores=scores, extra={"configuration": "DistilGPT2 base"}
    )
    records = results.load_records("smoke")
    table1 = results.side_by_side("000", "Table 1", records).set_index(["configuration", "metric"])
    run = table1.columns[-1]
    assert table1.loc[("DistilGPT2 base", "total"), run] == "5 of 12"
    assert table1.loc[("DistilGPT2 base", "train_minutes"), run] == "not trained"
    criteria = results.side_by_side("000", "Fine-tuning DistilGPT-2", records).set_index(
        ["configuration", "metric"]
    )
    assert criteria.loc[("DistilGPT2 base", "total"), criteria.columns[-1]] == "5 of 12"


def test_summary_table_never_shows_an_all_failed_run_as_zero(profile):
    _write(
        profile,
        "quality",
        scores={"total": 0, "graded": 0, "failed": 4, "max_total": 0},
        extra={"configuration": "Falcon-7B QLoRA"},
    )
    assert results.summary_table("smoke")["main score"].tolist() == ["all 4 judgments failed"]


def test_latest_takes_a_configuration_only_from_the_notebook_that_makes_it(profile):
    _write(
        profile,
        "base01",
        method="base",
        notebook="01_tweetsumm",
        extra={"configuration": "DistilGPT2 base"},
    )
    _write(
        profile,
        "base08",
        method="base",
        notebook="08_instructions",
        scores={"rouge1": 0.1},
        extra={"configuration": "DistilGPT2 base"},
    )
    assert (
        results.latest("smoke", ["DistilGPT2 base"])[0]["notebook"] == "08_instructions"
    )  # newest of any
    chosen = results.latest("smoke", ["DistilGPT2 base"], producers={"DistilGPT2 base": "01"})
    assert [r["notebook"] for r in chosen] == ["01_tweetsumm"]
