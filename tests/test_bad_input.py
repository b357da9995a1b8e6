"""Issue 14's cases not covered by the module test files: each bad input either fails with an error that
says what was wrong and what was expected, or warns with counts and goes on correctly.

The other cases are tested beside their module (see the issue note): drops, empty splits and encodings in
test_data.py; empty and over-long prompts in test_generate.py; unreadable records and passed secrets in
test_results.py; blank keys and empty summaries in test_grading.py; overrides in test_profile.py;
cutting, nothing left and resume in test_train.py; memory._limit("16") in test_memory.py.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback

from tutorlib import course, data, generate, grading, paths, results, train
from tutorlib.profile import Profile, detect
from tutorlib.templates import TEMPLATES

TEMPLATE = TEMPLATES["tweetsumm"]
SUMMARY = "Customer wants a refund for a late parcel. Agent asks for the order number."
FAST = {"max_steps": 2, "eval_strategy": "no", "logging_steps": 1}


@pytest.fixture(scope="module")
def smoke():
    return detect("smoke")


@pytest.fixture(scope="module")
def gpt2(smoke):
    return train.load_model(smoke.plan("distilgpt2"))


def _rows(*pairs: tuple[str, str]) -> Dataset:
    return Dataset.from_list(
        [
            {"id": str(i), "dialogue": d, "summary": s, "references": [s]}
            for i, (d, s) in enumerate(pairs)
        ]
    )


class TrainedRows(TrainerCallback):
    """Keeps the tokenized rows the trainer is about to train on (input ids and labels)."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.rows = list(train_dataloader.dataset)


def _learned(tok, row) -> str:
    """The text of the tokens a row's loss is computed on (labels that are not -100)."""
    return tok.decode([t for t in row["labels"] if t != -100])


# ---------------------------------------------------------------- training: count before you train


def test_a_50000_character_dialogue_alone_is_cut_warned_and_trained_with_its_whole_summary(
    smoke, gpt2
):
    # Before: trl dropped the row silently, and as the only row the length-grouped sampler raised IndexError.
    _, tok = gpt2
    dialogue = ("Customer: my parcel is late again and I want a refund now, where is it? " * 700)[
        :50_000
    ]
    rows = TrainedRows()
    with pytest.warns(
        UserWarning, match=r"train: 1 of 1 dialogues were cut at the end to fit max_length=384"
    ):
        plan = smoke.plan("distilgpt2", train_sampling_strategy="group_by_length", **FAST)
        pairs = DatasetDict(train=_rows((dialogue, SUMMARY)))
        run = train.finetune(plan, pairs, template=TEMPLATE, callbacks=[rows])
    assert [h["step"] for h in run.history if "loss" in h] == [1, 2]
    (row,) = rows.rows
    assert len(row["input_ids"]) <= 384
    assert (
        _learned(tok, row) == TEMPLATE.completion(SUMMARY) + tok.eos_token
    )  # the end marker survives


def _prompt_of(tok, n_tokens: int) -> str:
    """A dialogue whose prompt is exactly `n_tokens` tokens long."""
    ids = tok(
        " ".join(f"Customer: parcel {i} is late." for i in range(200)), add_special_tokens=False
    ).input_ids
    for k in range(len(ids), 0, -1):
        dialogue = tok.decode(ids[:k]).strip()
        if len(tok(TEMPLATE.prompt(dialogue)).input_ids) == n_tokens:
            return dialogue
    raise AssertionError(f"no dialogue gives a {n_tokens}-token prompt")


def test_a_376_token_prompt_keeps_its_summary_and_end_marker_also_without_completion_only_loss(
    smoke, gpt2
):
    # Before: the summary was cut to 8 tokens and lost its end marker; with the whole-sequence loss the
    # model trained on dialogue only.
    _, tok = gpt2
    dialogue = _prompt_of(tok, 376)
    pairs = DatasetDict(train=_rows((dialogue, SUMMARY)))
    with pytest.warns(UserWarning, match="1 of 1 dialogues were cut"):
        (row,) = train.prepare(pairs, TEMPLATE, tok, max_length=384)["train"]
    assert row["completion"] == TEMPLATE.completion(SUMMARY)
    assert len(tok(row["prompt"] + row["completion"]).input_ids) + 1 <= 384  # + the EOS trl appends
    # The old switch `completion_only=False` is gone: prepare always builds prompt/completion pairs, and
    # trl's own `completion_only_loss=False` trains on the whole sequence, whose end is the whole summary.
    with (
        pytest.warns(UserWarning, match="were cut"),
        pytest.raises(TypeError, match="'completion_only'"),
    ):
        train.finetune(smoke.plan("distilgpt2", completion_only=False), pairs, template=TEMPLATE)
    rows = TrainedRows()
    with pytest.warns(UserWarning, match="1 of 1 dialogues were cut"):
        plan = smoke.plan("distilgpt2", completion_only_loss=False, **FAST)
        train.finetune(plan, pairs, template=TEMPLATE, callbacks=[rows])
    learned = _learned(tok, rows.rows[0])
    assert learned.startswith("### Instruction:") and learned.endswith(
        TEMPLATE.completion(SUMMARY) + tok.eos_token
    )


def test_a_zero_row_training_set_is_a_clear_error_not_a_bare_stop_iteration(smoke):
    empty = DatasetDict(
        train=Dataset.from_dict({"id": [], "dialogue": [], "summary": [], "references": []})
    )
    with pytest.raises(ValueError, match=r"no usable train example"):
        train.finetune(smoke.plan("distilgpt2", **FAST), empty, template=TEMPLATE)


@pytest.mark.parametrize("room", [1, 2])
def test_a_summary_that_leaves_almost_no_room_drops_its_example_and_keeps_the_others(gpt2, room):
    _, tok = gpt2
    frame = (
        len(tok(TEMPLATE.prompt(".") + TEMPLATE.completion(SUMMARY)).input_ids) + 2
    )  # as prepare counts
    max_length = frame + room
    pairs = DatasetDict(
        train=_rows(("Customer: hi", "Late."), ("Customer: where is my parcel? " * 5, SUMMARY))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = train.prepare(pairs, TEMPLATE, tok, max_length=max_length)["train"]
    assert all(
        len(tok(r["prompt"] + r["completion"]).input_ids) + 1 <= max_length for r in prepared
    )
    assert any("1 examples dropped" in str(w.message) for w in caught)


def test_under_full_checkpoints_are_saved_on_a_schedule_by_default(smoke, gpt2, monkeypatch):
    # Only the configuration is checked: the trainer is replaced once SFTConfig is built.
    full = Profile(name="full", device="cpu", dtype=torch.float32)
    seen = {}

    class Stop(Exception):
        pass

    def trainer(*, args, **kwargs):
        seen[args.output_dir] = args
        raise Stop

    monkeypatch.setattr(train, "load_model", lambda *a, **k: gpt2)
    monkeypatch.setattr(train, "SFTTrainer", trainer)
    pairs = DatasetDict(train=_rows(("Customer: hi\nAgent: hello", "Greetings.")))
    for name in ("distilgpt2", "llama-2-7b", "falcon-7b", "phi-2"):
        with pytest.raises(Stop):
            train.finetune(full.plan(name), pairs, template=TEMPLATE)
    assert len(seen) == 4
    for args in seen.values():
        assert (
            args.save_strategy == "steps"
            and 0 < args.save_steps <= 500
            and args.save_total_limit == 2
        )
    with pytest.raises(Stop):
        train.finetune(smoke.plan("distilgpt2"), pairs, template=TEMPLATE)
    smoke_args = seen[str(paths.runs_dir() / "train" / "distilgpt2-full")]
    assert (
        smoke_args.save_strategy == "no"
    )  # why smoke cannot resume, as finetune(resume=True) says


# ---------------------------------------------------------------- generation past GPT-2's 1,024 positions


def test_a_prompt_past_1024_positions_is_cut_from_the_left_and_the_other_prompts_are_kept(gpt2):
    # Before: IndexError: index out of range in self, and the other prompts of the call were lost with it.
    model, tok = gpt2
    assert model.config.n_positions == 1024
    short = [
        TEMPLATE.prompt("Customer: hi\nAgent: hello"),
        TEMPLATE.prompt("Customer: late train\nAgent: sorry"),
    ]
    long = TEMPLATE.prompt("Customer: my parcel is late again. " * 250)
    assert len(tok(long).input_ids) > 1024
    alone = [
        generate.summarize(model, tok, [p], template=TEMPLATE, max_new_tokens=4)[0] for p in short
    ]
    with pytest.warns(
        UserWarning,
        match=r"prompts at index \[1\] do not fit the 1024-token context: only their "
        r"last 1020 tokens are used",
    ):
        out = generate.summarize(
            model, tok, [short[0], long, short[1]], template=TEMPLATE, max_new_tokens=4
        )
    assert len(out) == 3 and [out[0], out[2]] == alone


# ---------------------------------------------------------------- data files in another encoding


@pytest.mark.parametrize("name", ["train.json", "train.jsonl"])
def test_a_utf16_data_file_is_named_with_the_encoding_expected(tmp_path, name):
    record = {"id": "1", "dialogue": "Zoë: hi", "summary": "Zoë greets."}
    text = json.dumps([record]) if name.endswith(".json") else json.dumps(record) + "\n"
    (tmp_path / name).write_text(text, encoding="utf-16")
    with pytest.raises(ValueError, match=rf"{tmp_path / name} is not UTF-8 .*expected UTF-8"):
        data.load("samsum", tmp_path / name)


# ---------------------------------------------------------------- results: mistyped records, the judge's key


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORLIB_RESULTS", str(tmp_path / "results"))
    return paths.results_dir("smoke")


def _record(smoke, experiment="01_ok", **fields):
    args = {
        "notebook": "01_x.ipynb",
        "profile": smoke,
        "model": "distilgpt2",
        "method": "full",
        "scores": {"total": 3, "max_total": 6, "graded": 2},
        "train_seconds": 60.0,
        "peak_memory_mb": 10.0,
        "memory_kind": "cpu_rss",
        "extra": {"configuration": "DistilGPT2 full fine-tune"},
    }
    return results.record(experiment, **(args | fields))


MISTYPED = {  # file: (key, value, what the warning says)
    "seconds.json": ("train_seconds", "sixty", "train_seconds: Input should be a valid number"),
    "memory.json": ("peak_memory_mb", "10", "peak_memory_mb: Input should be a valid number"),
    "score.json": ("scores", {"total": "high"}, "scores.total: Input should be a valid number"),
    "configuration.json": ("extra", {"configuration": ["a"]}, "extra.configuration must be text"),
    "notebook.json": ("notebook", None, "notebook: Input should be a valid string"),
}


def test_mistyped_records_are_skipped_with_a_warning_naming_file_and_field_and_every_table_builds(
    smoke, results_dir
):
    # Before: one such file made summary_table, latest and side_by_side fail without naming it.
    good = json.loads(_record(smoke).read_text())
    for file, (key, value, _) in MISTYPED.items():
        (results_dir / file).write_text(json.dumps(good | {key: value}), encoding="utf-8")
    tables = {
        "summary_table": lambda: results.summary_table("smoke"),
        "latest": lambda: results.latest("smoke", ["DistilGPT2 full fine-tune"]),
        "side_by_side": lambda: results.side_by_side(
            "000", "Table 1", results.load_records("smoke")
        ),
    }
    for name, table in tables.items():
        with pytest.warns(UserWarning) as caught:
            built = table()
        if name == "summary_table":
            assert list(built["experiment"]) == ["01_ok"]
        messages = [str(w.message) for w in caught]
        for file, (*_, problem) in MISTYPED.items():
            skipped = f"skipping results record {results_dir / file}: it is not a results record"
            assert any(m.startswith(skipped) and problem in m for m in messages), (file, messages)
    ours = built[
        (built["configuration"] == "DistilGPT2 full fine-tune") & (built["metric"] == "total")
    ]
    assert list(ours.iloc[:, -1]) == ["3 of 6"]  # the good record is still beside the document's


def test_record_refuses_to_write_what_the_tables_would_skip(smoke, results_dir):
    with pytest.raises(
        ValueError, match=r"'01_bad'.*scores\.total: Input should be a valid number"
    ):
        _record(smoke, "01_bad", scores={"total": "high"})
    with pytest.raises(ValueError, match=r"extra\.configuration must be text"):
        _record(smoke, "01_bad", extra={"configuration": ["a", "b"]})
    assert not (results_dir / "01_bad.json").exists()


def test_a_key_given_to_the_judge_as_api_key_is_refused_in_a_lesson_record(
    smoke, results_dir, monkeypatch, tmp_path
):
    # Before: the guard only knew the keys in the environment, and a key passed as api_key= was written.
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TUTORLIB_JUDGE_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    key = "sk-passed-not-in-env-0123456789"
    judge = grading.LLMJudge(api_key=key, base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path)
    lesson = course.Lesson("01_test", smoke, template="tweetsumm", judge=judge)
    error = RuntimeError(
        f"401 Unauthorized: incorrect API key provided: {key}"
    )  # servers echo keys
    with pytest.raises(ValueError, match=r"contains the value of secrets\[0\]") as refused:
        lesson.failed("DistilGPT2 LoRA", error, model="distilgpt2", method="lora")
    assert key not in str(refused.value)
    assert not results_dir.exists() or not any(results_dir.iterdir())
    lesson.failed(
        "DistilGPT2 LoRA", RuntimeError("401 Unauthorized"), model="distilgpt2", method="lora"
    )


# ---------------------------------------------------------------- environment variables name themselves


@pytest.mark.parametrize("var", ["TUTORLIB_JUDGE_BASE_URL", "OPENAI_BASE_URL"])
def test_a_malformed_judge_url_names_the_variable_it_came_from(monkeypatch, var):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TUTORLIB_JUDGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, "localhost:8000/v1")
    with pytest.raises(
        ValueError, match=f"^{var} is not an http\\(s\\) URL; expected one such as http://"
    ):
        grading.choose_judge(verbose=False)
    monkeypatch.setenv(var, " ")  # blank is unset: the offline judge, no error
    assert isinstance(grading.choose_judge(verbose=False), grading.OfflineJudge)
    with pytest.raises(ValueError, match="^base_url is not an http"):
        grading.LLMJudge(base_url="ftp://example.org")
