"""The prompt format of each source document, as data, and how to cut a generation back to a summary.

A `Template` turns a dialogue into the model input that ends with the summary header
("### Summary:", "Summary:", "Output:"), turns a reference summary into the text the model learns to
write after that header, and cleans a generated continuation: it stops at the document's end-of-summary
marker (or any of the mangled copies a small fine-tuned model emits after it) and at the start of a
new prompt section that a base model tends to invent. Prompts never end in whitespace and completions
start with exactly one space, so the tokens of the prompt are a prefix of the tokens of prompt plus
completion, which is what completion-only loss masking relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasets import Dataset, DatasetDict

REQUIRED_COLUMNS = ("dialogue", "summary")


@dataclass(frozen=True)
class Template:
    """One document's prompt format.

    `layout` is a `str.format` pattern with `{instruction}` and `{dialogue}` that ends with the summary
    header. `end_marker` is the text appended after every training summary (None: the tokenizer's EOS
    alone ends it). `stop_strings` go to `generate(stop_strings=...)`. `cut_patterns` are regular
    expressions (multi-line mode); a generation is cut at the earliest match of any of them.
    `seq2seq` marks an encoder-decoder format: the summary is the decoder target, not a continuation.
    """

    name: str
    source: str
    instruction: str
    layout: str
    end_marker: str | None = None
    stop_strings: tuple[str, ...] = ()
    cut_patterns: tuple[str, ...] = ()
    seq2seq: bool = False

    def __post_init__(self) -> None:
        if "{dialogue}" not in self.layout:
            raise ValueError(f"template {self.name!r}: layout must contain '{{dialogue}}'")
        if self.layout != self.layout.rstrip():
            # A trailing space would become its own token and break the prompt/completion prefix property.
            raise ValueError(f"template {self.name!r}: layout must not end with whitespace")

    def prompt(self, dialogue: str) -> str:
        """The model input for one dialogue, up to and including the summary header, with no trailing space."""
        if not isinstance(dialogue, str) or not dialogue.strip():
            raise ValueError(
                f"template {self.name!r}: expected a non-empty dialogue string, got {dialogue!r}"
            )
        return self.layout.format(instruction=self.instruction, dialogue=dialogue.strip())

    def completion(self, summary: str) -> str:
        """What the model learns to write after the prompt.

        Causal formats: one space, the summary, then a space and the end marker if the template has one.
        The space belongs here rather than at the end of the prompt because byte-level tokenizers fuse a
        space with the word after it ("ĠCustomer"); a prompt ending in a space would tokenize differently
        alone than inside the full text. Seq2seq formats (FLAN-T5): the bare summary, because it is the
        decoder's target and never follows the prompt in one sequence.
        """
        if not isinstance(summary, str):
            raise ValueError(
                f"template {self.name!r}: expected a summary string, got {type(summary).__name__}"
            )
        summary = summary.strip()
        if self.seq2seq:
            return summary
        return f" {summary} {self.end_marker}" if self.end_marker else f" {summary}"

    def text(self, dialogue: str, summary: str) -> str:
        """Prompt and completion as one training text (for whole-text loss, or for display with seq2seq)."""
        joiner = " " if self.seq2seq else ""
        return self.prompt(dialogue) + joiner + self.completion(summary)

    def cut(self, generated: str) -> str:
        """A generated continuation reduced to the summary: cut at the first marker or new section, stripped."""
        end = len(generated)
        for pattern in self.cut_patterns:
            match = re.search(pattern, generated, flags=re.MULTILINE)
            if match:
                end = min(end, match.start())
        return generated[:end].strip()


# Marker variants seen after the summary of the fine-tuned DistilGPT-2 in document 000: the marker
# itself, <END_SENTENCE>, <END_OF_FIRST_SENTENCE>, a truncated <END_OF_SECOND, stray >>"") ...
# All start with "<END", so one pattern catches them; a generation cut off by max_new_tokens can
# also end in a bare "<", "<E" or "<EN", which the second pattern drops.
_MARKER_VARIANTS = (r"(?i)<\s*END", r"<(?:E(?:N)?)?\s*\Z", r'>>\s*"')
_NEW_SECTION = r"###"  # a base model writing "### Instruction:" again has finished (or never begun)

TEMPLATES: dict[str, Template] = {
    "tweetsumm": Template(
        name="tweetsumm",
        source="000: TWEETSUMM, DistilGPT-2 and Llama-2-7B with LoRA/QLoRA",
        instruction=(
            "Below is a conversation between a customer and a customer-support agent. Summarize it in "
            "exactly two sentences: the first says what the customer wanted, the second says how the "
            "agent responded."
        ),
        # The document puts the summary on the line after "### Summary:"; here it follows the header
        # after one space (see Template.completion), which keeps the token boundary clean.
        layout="### Instruction:\n{instruction}\n\n### Conversation:\n{dialogue}\n\n### Summary:",
        end_marker="<END_OF_SECOND_SENTENCE>",
        # "<END" stops on the marker and on every variant; "###" stops a base model restarting the prompt.
        stop_strings=("<END", "###"),
        cut_patterns=(*_MARKER_VARIANTS, _NEW_SECTION),
    ),
    "flan_t5": Template(
        name="flan_t5",
        source="001: FLAN-T5-base on DialogSum, full fine-tuning and LoRA",
        # Kept word for word: it is the phrasing FLAN-T5 saw in its own instruction tuning, so the
        # zero-shot baseline is fair to the model.
        instruction="Summarize the following conversation.",
        layout="{instruction}\n\n{dialogue}\n\nSummary:",
        cut_patterns=(r"^\s*Summary:",),
        seq2seq=True,
    ),
    "falcon_samsum": Template(
        name="falcon_samsum",
        source="002: Falcon-7B with QLoRA on SAMSum",
        # The document trains with one instruction ("Summarize this Dialogue.") and prompts at inference
        # with another ("Summarize the Dialogue below."). A fine-tuned model does best on the exact
        # prompt it was trained on, so one instruction serves both here.
        instruction="Write a short summary of the dialogue below.",
        layout="### Instruction:\n{instruction}\n\n### Dialogue:\n{dialogue}\n\n### Summary:",
        stop_strings=("###",),
        cut_patterns=(_NEW_SECTION,),
    ),
    "phi2": Template(
        name="phi2",
        # Document 003 gives no prompt format, so this one is designed here in the "Instruct: ... Output:"
        # question-answer style that Phi-2's model card recommends.
        source="003: Phi-2 with QLoRA on DialogSum (no prompt given there; Phi-2 'Instruct/Output' style)",
        instruction="Summarize the following conversation between two people in one or two sentences.",
        layout="Instruct: {instruction}\n\n{dialogue}\n\nOutput:",
        stop_strings=("Instruct:",),
        cut_patterns=(r"^\s*(?:Instruct|Output):", r"<\|endoftext\|>"),
    ),
}


def _convert(dataset: Dataset | DatasetDict, build) -> Dataset | DatasetDict:
    """Apply a batched `build(dialogues, summaries) -> columns` to every split, keeping only `id`."""
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: _convert(part, build) for split, part in dataset.items()})
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset is missing column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(REQUIRED_COLUMNS)} (and optionally id), found: {', '.join(dataset.column_names) or 'none'}"
        )
    drop = [c for c in dataset.column_names if c != "id"]
    return dataset.map(
        lambda batch: build(batch["dialogue"], batch["summary"]), batched=True, remove_columns=drop
    )


def to_prompt_completion(dataset: Dataset | DatasetDict, template: Template) -> Dataset | DatasetDict:
    """Columns `prompt` and `completion` (plus `id`), the shape trl's completion-only loss expects."""
    return _convert(
        dataset,
        lambda ds, ss: {
            "prompt": [template.prompt(d) for d in ds],
            "completion": [template.completion(s) for s in ss],
        },
    )


def to_text(dataset: Dataset | DatasetDict, template: Template) -> Dataset | DatasetDict:
    """One column `text` (plus `id`): prompt and completion joined, for loss on the whole sequence."""
    return _convert(
        dataset, lambda ds, ss: {"text": [template.text(d, s) for d, s in zip(ds, ss, strict=True)]}
    )


def to_seq2seq(dataset: Dataset | DatasetDict, template: Template) -> Dataset | DatasetDict:
    """Columns `prompt` (the encoder input) and `completion` (the bare summary, the decoder target), plus `id`."""
    return _convert(
        dataset,
        lambda ds, ss: {"prompt": [template.prompt(d) for d in ds], "completion": [s.strip() for s in ss]},
    )
