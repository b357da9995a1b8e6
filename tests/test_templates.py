"""Prompt templates: prompt/completion shapes, the token-prefix property, cutting generations, conversion."""

from __future__ import annotations

import pytest
from tokenizers import ByteLevelBPETokenizer

from tutorlib.templates import TEMPLATES, Template

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
    assert {name: t.document for name, t in TEMPLATES.items()} == {
        "tweetsumm": "000",
        "flan_t5": "001",
        "falcon_samsum": "002",
        "phi2": "003",
    }
    assert all(t.name == name for name, t in TEMPLATES.items())
    assert TEMPLATES["tweetsumm"].end_marker == "<END_OF_SECOND_SENTENCE>"
    assert TEMPLATES["flan_t5"].seq2seq and not any(TEMPLATES[n].seq2seq for n in CAUSAL)
    assert (
        TEMPLATES["flan_t5"].instruction == "Summarize the following conversation."
    )  # document 001's words


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_prompt_ends_with_the_summary_header_and_no_space(name):
    template = TEMPLATES[name]
    prompt = template.prompt(DIALOGUE)
    assert prompt.endswith(HEADERS[name])
    assert DIALOGUE.strip() in prompt and template.instruction in prompt


@pytest.mark.parametrize(
    ("name", "sections"), [("tweetsumm", "Conversation"), ("falcon_samsum", "Dialogue")]
)
def test_the_documents_sections_in_order(name, sections):
    prompt = TEMPLATES[name].prompt(DIALOGUE)
    positions = [prompt.index(f"### {h}:") for h in ("Instruction", sections, "Summary")]
    assert positions == sorted(positions)


def test_braces_in_a_dialogue_are_kept_literally():
    prompt = TEMPLATES["falcon_samsum"].prompt("Ann: my {name} placeholder broke\nBob: {} ok")
    assert "Ann: my {name} placeholder broke\nBob: {} ok" in prompt


@pytest.mark.parametrize("bad", ["", "   \n", None])
def test_prompt_rejects_an_empty_dialogue(bad):
    with pytest.raises(ValueError, match="template 'tweetsumm': expected a non-empty dialogue"):
        TEMPLATES["tweetsumm"].prompt(bad)


def test_completions():
    assert (
        TEMPLATES["tweetsumm"].completion(SUMMARY) == f" {CLEAN_SUMMARY} <END_OF_SECOND_SENTENCE>"
    )
    assert TEMPLATES["falcon_samsum"].completion(SUMMARY) == f" {CLEAN_SUMMARY}"
    assert TEMPLATES["phi2"].completion(SUMMARY) == f" {CLEAN_SUMMARY}"
    assert TEMPLATES["flan_t5"].completion(SUMMARY) == CLEAN_SUMMARY  # the decoder's target: bare
    with pytest.raises(ValueError, match="expected a summary string, got None"):
        TEMPLATES["phi2"].completion(None)


@pytest.mark.parametrize("name", CAUSAL)
def test_text_is_prompt_then_completion(name):
    t = TEMPLATES[name]
    assert t.text(DIALOGUE, SUMMARY) == t.prompt(DIALOGUE) + t.completion(SUMMARY)


@pytest.fixture(scope="module")
def byte_level():
    tok = ByteLevelBPETokenizer()
    texts = [t.text(DIALOGUE, SUMMARY) for t in TEMPLATES.values()] * 20
    tok.train_from_iterator(texts, vocab_size=400, min_frequency=1, show_progress=False)
    return tok


@pytest.mark.parametrize("name", CAUSAL)
def test_prompt_tokens_are_an_exact_prefix_of_the_whole_text(byte_level, name):
    t = TEMPLATES[name]
    prompt = byte_level.encode(t.prompt(DIALOGUE)).ids
    assert byte_level.encode(t.text(DIALOGUE, SUMMARY)).ids[: len(prompt)] == prompt
    # The failure this avoids: a prompt ending in the space tokenizes differently alone.
    spaced = byte_level.encode(t.prompt(DIALOGUE) + " ").ids
    assert byte_level.encode(t.prompt(DIALOGUE) + " " + CLEAN_SUMMARY).ids[: len(spaced)] != spaced


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_cut_recovers_the_training_summary(name):
    assert TEMPLATES[name].cut(TEMPLATES[name].completion(SUMMARY)) == CLEAN_SUMMARY


# Hand-written continuations in the shapes document 000 shows: a fine-tuned small model writes two
# sentences and then mangled copies of the marker; a base model restarts the prompt.
FEES = "Customer asks about fees. Agent says none apply."
TWEETSUMM_CASES = [
    (
        f' {FEES} <END_OF_SECOND_SENTENCE>\n<END_SENTENCE> <END_OF_SECOND_SENTENCE>>"") <END_OF_SECOND',
        FEES,
    ),
    (f" {FEES} <END_OF_SECOND_SENTENCE>\n<END_OF_FIRST_SENTENCE>", FEES),
    (f" {FEES} <END_SENTENCE> <END_OF_SECOND_SENTENCE>", FEES),
    (f" {FEES} <END_OF_SEC", FEES),
    (f" {FEES} <EN", FEES),
    (f" {FEES} <", FEES),
    (f' {FEES}>>"") <END', FEES),
    (f" {FEES}\n\n### Instruction:\nRead the following", FEES),
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
    assert TEMPLATES["tweetsumm"].cut(generated) == expected


def test_other_templates_cut_at_a_restarted_prompt_or_a_marker():
    falcon, phi, flan = TEMPLATES["falcon_samsum"], TEMPLATES["phi2"], TEMPLATES["flan_t5"]
    assert (
        falcon.cut(" Amanda baked cookies.\n\n### Dialogue:\nAmanda: hi") == "Amanda baked cookies."
    )
    assert (
        falcon.cut(" Amanda sends <file_photo> to Jerry <3")
        == "Amanda sends <file_photo> to Jerry <3"
    )
    # DialogSum speaker tags (#Person1#) must survive; a new "Instruct:" turn must not.
    assert (
        phi.cut(" #Person1# asks the way.\nInstruct: Summarize this") == "#Person1# asks the way."
    )
    assert phi.cut(" #Person1# pays.<|endoftext|>Output: more") == "#Person1# pays."
    assert flan.cut("  #Person1# greets #Person2#. ") == "#Person1# greets #Person2#."
    assert (
        Template("x", "-", "Do it.", "{instruction}\n{dialogue}\nTL;DR:", end_marker="[done]").cut(
            " a. [done] b"
        )
        == "a."
    )
