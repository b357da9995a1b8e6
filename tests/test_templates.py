"""Prompt templates: prompt/completion shapes, cutting generations, dataset conversion."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict

from tutorlib.templates import TEMPLATES, Template, to_prompt_completion, to_seq2seq, to_text

DIALOGUE = (
    "Customer: I booked the 9:15 to Leeds but need Friday instead. Can I change it?\n"
    "Agent: Yes! I have moved your booking to Friday at 9:15, no fee this time.\n"
)
SUMMARY = "  Customer wants to move a train booking to Friday. Agent moves it without a fee.\n"
CLEAN_SUMMARY = SUMMARY.strip()
CAUSAL = [name for name, t in TEMPLATES.items() if not t.seq2seq]
HEADERS = {
    "tweetsumm": "### Summary:",
    "flan_t5": "Summary:",
    "falcon_samsum": "### Summary:",
    "phi2": "Output:",
}


def test_the_four_documents_have_templates():
    assert set(TEMPLATES) == {"tweetsumm", "flan_t5", "falcon_samsum", "phi2"}
    assert [t.name for t in TEMPLATES.values()] == list(TEMPLATES)
    assert TEMPLATES["tweetsumm"].end_marker == "<END_OF_SECOND_SENTENCE>"
    assert TEMPLATES["flan_t5"].seq2seq and not any(TEMPLATES[n].seq2seq for n in CAUSAL)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_prompt_ends_with_the_summary_header_and_no_space(name):
    template = TEMPLATES[name]
    prompt = template.prompt(DIALOGUE)
    assert prompt.endswith(HEADERS[name])
    assert prompt == prompt.rstrip()
    assert DIALOGUE.strip() in prompt
    assert template.instruction in prompt


def test_tweetsumm_prompt_keeps_the_documented_sections_in_order():
    prompt = TEMPLATES["tweetsumm"].prompt(DIALOGUE)
    positions = [prompt.index(h) for h in ("### Instruction:", "### Conversation:", "### Summary:")]
    assert positions == sorted(positions)


def test_braces_in_a_dialogue_are_kept_literally():
    prompt = TEMPLATES["falcon_samsum"].prompt("Ann: my {name} placeholder broke\nBob: {} ok")
    assert "Ann: my {name} placeholder broke\nBob: {} ok" in prompt


@pytest.mark.parametrize("bad", ["", "   \n", None])
def test_prompt_rejects_an_empty_dialogue(bad):
    with pytest.raises(ValueError, match="dialogue"):
        TEMPLATES["tweetsumm"].prompt(bad)


def test_tweetsumm_completion_is_one_space_summary_space_marker():
    completion = TEMPLATES["tweetsumm"].completion(SUMMARY)
    assert completion == f" {CLEAN_SUMMARY} <END_OF_SECOND_SENTENCE>"
    assert completion.startswith(" ") and not completion.startswith("  ")


def test_completion_without_a_marker_and_for_seq2seq():
    assert TEMPLATES["falcon_samsum"].completion(SUMMARY) == f" {CLEAN_SUMMARY}"
    assert TEMPLATES["phi2"].completion(SUMMARY) == f" {CLEAN_SUMMARY}"
    assert TEMPLATES["flan_t5"].completion(SUMMARY) == CLEAN_SUMMARY  # decoder target: bare


@pytest.mark.parametrize("name", CAUSAL)
def test_text_is_prompt_then_completion(name):
    t = TEMPLATES[name]
    assert t.text(DIALOGUE, SUMMARY) == t.prompt(DIALOGUE) + t.completion(SUMMARY)
    assert t.text(DIALOGUE, SUMMARY).endswith(
        HEADERS[name] + " " + CLEAN_SUMMARY + (f" {t.end_marker}" if t.end_marker else "")
    )


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_cut_recovers_the_training_summary(name):
    t = TEMPLATES[name]
    assert t.cut(t.completion(SUMMARY)) == CLEAN_SUMMARY


# Hand-written continuations in the shapes document 000 shows: a fine-tuned small model writes two
# sentences and then keeps emitting mangled copies of the marker; a base model restarts the prompt.
TWEETSUMM_CASES = [
    (
        " Customer wants a refund for a cracked screen. Agent asks for the order number in a DM. "
        '<END_OF_SECOND_SENTENCE>\n<END_SENTENCE> <END_OF_SECOND_SENTENCE>>"") <END_SENTENCE>\n<END_OF_SECOND',
        "Customer wants a refund for a cracked screen. Agent asks for the order number in a DM.",
    ),
    (
        " Customer cannot log in after the update. Agent suggests reinstalling the app. "
        "<END_OF_SECOND_SENTENCE>\n<END_OF_FIRST_SENTENCE>",
        "Customer cannot log in after the update. Agent suggests reinstalling the app.",
    ),
    (" Customer asks about fees. Agent says none apply. <END_SENTENCE> <END_OF_SECOND_SENTENCE>", None),
    (" Customer asks about fees. Agent says none apply. <END_OF_SEC", None),
    (" Customer asks about fees. Agent says none apply. <EN", None),
    (" Customer asks about fees. Agent says none apply. <", None),
    (' Customer asks about fees. Agent says none apply.>>"") <END', None),
    (" Customer asks about fees. Agent says none apply.\n\n### Instruction:\nRead the following", None),
    (" \n### Instruction:\n### Conversation:\nCustomer: hi, my Acc was linked", ""),
    (
        "  Customer asks about fees.   Agent says none apply.  ",
        "Customer asks about fees.   Agent says none apply.",
    ),
    (
        " Customer pays < 5 dollars. Agent agrees. <END_OF_SECOND_SENTENCE>",
        "Customer pays < 5 dollars. Agent agrees.",
    ),
]


@pytest.mark.parametrize(("generated", "expected"), TWEETSUMM_CASES)
def test_tweetsumm_cut_on_generations(generated, expected):
    expected = "Customer asks about fees. Agent says none apply." if expected is None else expected
    assert TEMPLATES["tweetsumm"].cut(generated) == expected


def test_other_templates_cut_at_a_repeated_header_only():
    falcon = TEMPLATES["falcon_samsum"]
    assert (
        falcon.cut(" Amanda baked cookies for Jerry.\n\n### Dialogue:\nAmanda: hi")
        == "Amanda baked cookies for Jerry."
    )
    phi = TEMPLATES["phi2"]
    # DialogSum speaker tags (#Person1#) must survive; a new "Instruct:" turn must not.
    assert (
        phi.cut(" #Person1# asks #Person2# the way to the bank.\nInstruct: Summarize this")
        == "#Person1# asks #Person2# the way to the bank."
    )
    assert phi.cut(" #Person1# pays.<|endoftext|>Output: more") == "#Person1# pays."
    assert TEMPLATES["flan_t5"].cut("  #Person1# greets #Person2#. ") == "#Person1# greets #Person2#."


def test_a_layout_with_a_trailing_space_is_rejected():
    with pytest.raises(ValueError, match="whitespace"):
        Template(name="bad", source="test", instruction="x", layout="{instruction}\n{dialogue}\nSummary: ")
    with pytest.raises(ValueError, match="dialogue"):
        Template(name="bad", source="test", instruction="x", layout="{instruction} Summary:")


def _records(with_id: bool = True) -> Dataset:
    rows = [
        {"id": "a", "dialogue": DIALOGUE, "summary": SUMMARY, "topic": "travel"},
        {"id": "b", "dialogue": "Ann: hi\nBob: hello", "summary": "Ann and Bob greet.", "topic": "chat"},
    ]
    if not with_id:
        rows = [{k: v for k, v in r.items() if k != "id"} for r in rows]
    return Dataset.from_list(rows)


def test_to_prompt_completion_builds_the_trl_columns():
    t = TEMPLATES["tweetsumm"]
    out = to_prompt_completion(_records(), t)
    assert sorted(out.column_names) == ["completion", "id", "prompt"]
    assert out["id"] == ["a", "b"]
    assert out[0]["prompt"] == t.prompt(DIALOGUE)
    assert out[1]["completion"] == " Ann and Bob greet. <END_OF_SECOND_SENTENCE>"


def test_conversions_without_id_and_on_a_datasetdict():
    t = TEMPLATES["falcon_samsum"]
    assert to_text(_records(with_id=False), t).column_names == ["text"]
    splits = to_text(DatasetDict(train=_records(), test=_records(with_id=False)), t)
    assert sorted(splits["train"].column_names) == ["id", "text"]
    assert splits["test"]["text"][1] == t.text("Ann: hi\nBob: hello", "Ann and Bob greet.")


def test_to_seq2seq_targets_the_bare_summary():
    out = to_seq2seq(_records(), TEMPLATES["flan_t5"])
    assert sorted(out.column_names) == ["completion", "id", "prompt"]
    assert out["completion"] == [CLEAN_SUMMARY, "Ann and Bob greet."]
    assert out[0]["prompt"].startswith("Summarize the following conversation.")


@pytest.mark.parametrize("convert", [to_prompt_completion, to_text, to_seq2seq])
def test_a_missing_column_is_named(convert):
    no_summary = Dataset.from_list([{"id": "a", "dialogue": DIALOGUE}])
    with pytest.raises(ValueError, match=r"missing column\(s\) summary.*expected columns dialogue, summary"):
        convert(no_summary, TEMPLATES["tweetsumm"])
    no_dialogue = DatasetDict(train=Dataset.from_list([{"text": "x", "summary": "y"}]))
    with pytest.raises(ValueError, match="missing column\\(s\\) dialogue.*found: text, summary"):
        convert(no_dialogue, TEMPLATES["tweetsumm"])
