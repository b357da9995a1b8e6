"""Results records on disk, the documents' reference numbers, and the side-by-side tables."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tutorlib import paths, results

SCHEMA = {
    "experiment",
    "notebook",
    "profile",
    "model",
    "method",
    "device",
    "dtype",
    "train_seconds",
    "peak_memory_mb",
    "memory_kind",
    "scores",
    "library_versions",
    "created_at",
}


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


def test_record_writes_one_json_file_with_the_schema(profile):
    path = _write(profile)
    assert path == paths.results_dir("smoke") / "distilgpt2_lora.json"
    data = json.loads(path.read_text())
    assert SCHEMA <= set(data)
    assert data["device"] == "cuda (Tesla V100-SXM2-16GB)"
    assert data["dtype"] == "float16"
    assert data["scores"]["total"] == 58
    assert data["memory_kind"] == "cuda"
    assert "transformers" in data["library_versions"]
    assert data["created_at"].endswith("+00:00")
    assert [p.name for p in path.parent.iterdir()] == ["distilgpt2_lora.json"]  # no temp file left


def test_record_round_trips_through_load(profile):
    _write(profile)
    _write(profile, "distilgpt2_full", method="full", scores={"total": 67}, extra={"configuration": "x"})
    table = results.load("smoke")
    assert len(table) == 2
    row = table.set_index("experiment").loc["distilgpt2_lora"]
    assert row["score.total"] == 58
    assert row["score.two_sentences"] == 42
    assert row["extra.configuration"] == "DistilGPT2 LoRA"
    assert row["peak_memory_mb"] == pytest.approx(1234.5)
    assert {r["experiment"] for r in results.load_records()} == {"distilgpt2_lora", "distilgpt2_full"}


def test_load_filters_by_notebook_and_profile(profile):
    _write(profile)
    _write(profile, "flan_t5_lora", notebook="02_dialogsum_flan_t5.ipynb")
    assert list(results.load(notebook="02_dialogsum_flan_t5")["experiment"]) == ["flan_t5_lora"]
    assert results.load("full").empty


def test_load_without_records_gives_the_schema_columns():
    table = results.load()
    assert table.empty
    assert set(results.COLUMNS) <= set(table.columns)


def test_load_names_a_corrupt_record(profile):
    folder = paths.results_dir("smoke")
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        results.load()


@pytest.mark.parametrize("name", ["Bad Name", "../escape", "", "x.json", "UPPER"])
def test_bad_experiment_names_are_refused(profile, name):
    with pytest.raises(ValueError, match="experiment name"):
        _write(profile, name)


def test_memory_must_say_what_it_measured(profile):
    with pytest.raises(ValueError, match="memory_kind"):
        _write(profile, memory_kind="gpu")
    with pytest.raises(ValueError, match="memory_kind"):
        _write(profile, memory_kind=None)
    path = _write(profile, peak_memory_mb=None, memory_kind=None)
    assert json.loads(path.read_text())["peak_memory_mb"] is None


@pytest.mark.parametrize("var", ["OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_a_record_containing_a_secret_is_refused(profile, monkeypatch, var):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv(var, secret)
    with pytest.raises(ValueError, match=var) as err:
        _write(profile, extra={"configuration": "x", "api": f"key={secret}"})
    assert secret not in str(err.value)
    assert not paths.results_dir("smoke").exists() or not any(paths.results_dir("smoke").iterdir())
    _write(profile)  # the same record without the secret is written


def test_record_run_reads_the_training_result(profile):
    run = SimpleNamespace(
        seconds=12.5,
        peak_memory_mb=300.0,
        memory_kind="cpu_rss",
        method="qlora",
        model_name="distilgpt2",
        trainable_params=20,
        total_params=1000,
    )
    path = results.record_run("tiny_qlora", run, notebook="01", profile=profile, scores={"rougeL": 0.25})
    data = json.loads(path.read_text())
    assert (data["train_seconds"], data["memory_kind"], data["method"]) == (12.5, "cpu_rss", "qlora")
    assert data["extra"]["trainable_percent"] == pytest.approx(2.0)
    assert data["extra"]["total_params"] == 1000
    del run.model_name
    with pytest.raises(ValueError, match="model"):
        results.record_run("tiny_qlora", run, notebook="01", profile=profile, scores={})


def test_summary_table_has_one_line_per_record(profile):
    _write(profile)
    _write(profile, "llama_full", model="llama-2-7b", method="full", scores={}, extra={"failed": "OOM"})
    table = results.summary_table("smoke").set_index("experiment")
    assert table.loc["distilgpt2_lora", "main score"] == "total 58"
    assert table.loc["distilgpt2_lora", "train min"] == pytest.approx(6.9)
    assert table.loc["distilgpt2_lora", "peak memory"] == "1234 MB (cuda)"
    assert table.loc["llama_full", "main score"] == "failed (OOM)"


def _published(document, table, configuration, metric):
    ref = results.reference(document, table)
    values = ref[(ref.configuration == configuration) & (ref.metric == metric)]["value"]
    assert len(values) == 1, (document, table, configuration, metric)
    return values.iloc[0]


def test_tweetsumm_criteria_add_up_to_the_table_totals():
    text_ft = sum(
        _published("000", "Fine-tuning DistilGPT-2", "DistilGPT2 full fine-tune", c)
        for c in ("customer", "agent", "two_sentences")
    )
    assert text_ft == _published("000", "Table 1", "DistilGPT2 full fine-tune", "total") == 67
    text_lora = sum(
        _published("000", "Parameter-efficient fine-tuning", "DistilGPT2 LoRA", c)
        for c in ("customer", "agent", "two_sentences")
    )
    assert text_lora == _published("000", "Table 1", "DistilGPT2 LoRA", "total") == 58
    base = _published("000", "LLama-2-7B", "Llama-2-7B base", "two_sentences") + _published(
        "000", "LLama-2-7B", "Llama-2-7B base", "customer+agent"
    )
    assert base == _published("000", "Table 2", "Llama-2-7B base", "total") == 25.5
    assert (
        results.reference("000", "Table 2")
        .query("configuration == 'Llama-2-7B full fine-tune'")["note"]
        .eq("failed (OOM)")
        .all()
    )


def test_falcon_and_phi2_numbers_are_consistent_with_each_other():
    trainable = _published(
        "002", "Fine-Tuning with Model Quantization and LoRA", "Falcon-7B QLoRA", "trainable_params"
    )
    total = _published(
        "002", "Fine-Tuning with Model Quantization and LoRA", "Falcon-7B QLoRA", "total_params"
    )
    percent = _published(
        "002", "Fine-Tuning with Model Quantization and LoRA", "Falcon-7B QLoRA", "trainable_percent"
    )
    assert round(100 * trainable / total, 2) == percent
    history = results.reference_log_history("003")
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 40 and len(history) == 80
    assert [h["step"] for h in history][:4] == [25, 25, 50, 50]
    # The reported mean training loss is the mean of the 40 logged losses (to 5 decimals).
    train_loss = _published("003", "Model Training Performance", "Phi-2 QLoRA", "train_loss")
    assert sum(losses) / len(losses) == pytest.approx(train_loss, abs=1e-5)
    # 1000 steps x batch 1 x accumulation 4 samples in train_runtime seconds.
    seconds = _published("003", "Model Training Performance", "Phi-2 QLoRA", "train_seconds")
    assert 4000 / seconds == pytest.approx(
        _published("003", "Model Training Performance", "Phi-2 QLoRA", "train_samples_per_second"), abs=1e-3
    )


def test_reference_covers_every_document_and_rejects_unknown_ones():
    assert set(results.reference()["document"]) == set(results.DOCUMENTS)
    assert results.reference("001", "Evaluation")["note"].eq("not published").all()
    with pytest.raises(ValueError, match="unknown document"):
        results.reference("999")
    with pytest.raises(ValueError, match="Table 1"):
        results.reference("000", "Table 9")


def test_side_by_side_names_the_run_and_marks_missing_and_failed_rows(profile):
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
    assert table1.loc[("DistilGPT2 LoRA", "total"), "document"] == 58
    assert table1.loc[("DistilGPT2 LoRA", "total"), header] == 58
    assert table1.loc[("DistilGPT2 LoRA", "train_minutes"), header] == pytest.approx(6.9)
    assert table1.loc[("DistilGPT2 QLoRA", "total"), header] == "not run"
    table2 = results.side_by_side("000", "Table 2", results.load("smoke")).set_index(
        ["configuration", "metric"]
    )
    assert table2.loc[("Llama-2-7B full fine-tune", "total"), "document"] == "failed (OOM)"
    assert table2.loc[("Llama-2-7B full fine-tune", "total"), header] == "failed (OOM)"
    assert table2.loc[("Llama-2-7B LoRA", "total"), header] == "not run"


def test_side_by_side_accepts_plain_rows_and_reports_unmeasured_metrics():
    rows = [{"configuration": "FLAN-T5 LoRA", "rouge1": 0.41234567, "profile": "smoke", "device": "cpu"}]
    table = results.side_by_side("001", "Evaluation", rows).set_index(["configuration", "metric"])
    assert "this run (smoke, cpu)" in table.columns
    assert table.loc[("FLAN-T5 LoRA", "rouge1"), "this run (smoke, cpu)"] == pytest.approx(0.4123)
    assert table.loc[("FLAN-T5 LoRA", "rouge1"), "document"] == "not published"
    assert table.loc[("FLAN-T5 LoRA", "rouge2"), "this run (smoke, cpu)"] == "not measured"
    assert table.loc[("FLAN-T5 base", "rouge1"), "this run (smoke, cpu)"] == "not run"
