"""Each source document's prompt format as data, and cutting a generation back to its summary.

A prompt ends with the summary header and the completion starts with the space: a byte-level
tokenizer fuses it with the next word, so the prompt's tokens are a prefix of the whole text's, as
trl's loss masking needs."""

import re
from dataclasses import dataclass

# What a model writes after its summary: a marker variant (<END_SENTENCE>, a cut-off "<EN" or
# final "<", <|endoftext|>, a '>>"' tail: document 000 shows them) or a restarted "###" section.
# "< 5" is kept.
_MARKER_LIKE = r'<\s*(?:[A-Z_|/]|\Z)|>>\s*"|###'


@dataclass(frozen=True)
class Template:
    """`layout` holds `{instruction}` and `{dialogue}` and ends with the summary header."""

    name: str
    document: str
    instruction: str
    layout: str
    end_marker: str | None = None  # appended to every training summary; None: EOS alone ends it
    seq2seq: bool = False  # encoder-decoder: the bare summary is the decoder's target

    def prompt(self, dialogue: str) -> str:
        """The model input up to and including the summary header, with no trailing whitespace."""
        if not isinstance(dialogue, str) or not dialogue.strip():
            raise ValueError(
                f"template {self.name!r}: expected a non-empty dialogue, got {dialogue!r}"
            )
        return self.layout.format(instruction=self.instruction, dialogue=dialogue.strip()).rstrip()

    def completion(self, summary: str) -> str:
        """' <summary> <end marker>' after a causal model's prompt; the bare summary for seq2seq."""
        if not isinstance(summary, str):
            raise ValueError(f"template {self.name!r}: expected a summary string, got {summary!r}")
        tail = f" {self.end_marker}" if self.end_marker else ""
        return summary.strip() if self.seq2seq else f" {summary.strip()}{tail}"

    def text(self, dialogue: str, summary: str) -> str:
        """Prompt and completion as one text, for loss on the whole sequence."""
        return self.prompt(dialogue) + (" " if self.seq2seq else "") + self.completion(summary)

    def cut(self, generated: str) -> str:
        """Cut at the end marker, anything marker-like or a restarted prompt section; stripped."""
        # "### Summary:", "Output:"
        headers = re.findall(r"^[^{\n]*?:", self.layout, flags=re.MULTILINE)
        patterns = [_MARKER_LIKE, *(rf"^\s*{re.escape(h)}" for h in headers)]
        patterns += [re.escape(self.end_marker)] if self.end_marker else []
        match = re.search("|".join(patterns), generated, flags=re.MULTILINE)
        return generated[: match.start() if match else None].strip()


# Departures, disclosed as the course promises. 000 and 002 put the summary on the line after
# "### Summary:"; here it follows after one space (see the module docstring). 000's instruction is
# reworded (same asks: two sentences, the customer's question, then the agent's reply); its headers
# and end marker are kept. 002 trains with "Summarize this Dialogue." but prompts with
# "Summarize the Dialogue below."; one instruction of ours serves both, as a fine-tuned model does
# best on the prompt it learned. 001's words are kept exactly (FLAN-T5 was tuned on them: a fair
# zero-shot baseline), less the space after "Summary:". 003 gives no prompt: ours follows the
# "Instruct: ... Output:" style of Phi-2's model card.
_TWEETSUMM = (
    "Below is a conversation between a customer and a customer-support agent. Summarize it in "
    "exactly two sentences: the first says what the customer wanted, the second says how the agent "
    "responded."
)
_FLAN = "Summarize the following conversation."
_FALCON = "Write a short summary of the dialogue below."
_PHI2 = "Summarize the following conversation between two people in one or two sentences."
_SECTIONS = "### Instruction:\n{instruction}\n\n### %s:\n{dialogue}\n\n### Summary:"
_TWEETSUMM_END = "<END_OF_SECOND_SENTENCE>"
_ALL = (
    Template("tweetsumm", "000", _TWEETSUMM, _SECTIONS % "Conversation", _TWEETSUMM_END),
    Template("flan_t5", "001", _FLAN, "{instruction}\n\n{dialogue}\n\nSummary:", seq2seq=True),
    Template("falcon_samsum", "002", _FALCON, _SECTIONS % "Dialogue"),
    Template("phi2", "003", _PHI2, "Instruct: {instruction}\n\n{dialogue}\n\nOutput:"),
)
TEMPLATES: dict[str, Template] = {t.name: t for t in _ALL}
