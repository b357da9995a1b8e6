"""The run plan (ARCHITECTURE.md, "The run plan"): everything one training run needs, resolved
once from four sources, a later one winning: course < document < profile < notebook."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from tutorlib import models

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from tutorlib.profile import Profile

SOURCES = ("course", "document", "profile", "notebook")
# Every course run: a validation loss per epoch (the documents pass a validation set, which 2023's
# default eval_strategy "no" never used), at most two checkpoints kept, no experiment tracker, and
# a progress bar rather than a printed dict per logging step.
COURSE = dict(eval_strategy="epoch", save_total_limit=2, report_to="none", disable_tqdm=False)


@dataclass(frozen=True)
class Plan:
    """One training run, resolved. Build it with `profile.plan(model, method, **own)`."""

    model: str  # the registry name, e.g. "llama-2-7b"
    method: str  # one of models.METHODS
    profile: Profile
    checkpoint: str  # what from_pretrained loads under this profile
    dtype: torch.dtype  # the weights as loaded: fp32 for full fine-tuning, else the profile's
    args: Mapping[str, Any]  # trainer arguments
    sources: Mapping[str, str]  # where each trainer argument (and LoRA setting) came from
    lora_settings: Mapping[str, Any] | None = None  # the LoraConfig's arguments; None: full

    @property
    def spec(self) -> models.Spec:
        return models.spec(self.model)

    @property
    def lora(self) -> LoraConfig | None:
        """The document's LoraConfig (None for full fine-tuning); a new object on each access,
        because peft and trl fill in the one they are given."""
        from peft import LoraConfig

        return None if self.lora_settings is None else LoraConfig(**self.lora_settings)

    @property
    def quantization(self) -> BitsAndBytesConfig | None:
        """LLM.int8 for `lora-8bit`; NF4 with the document's settings for `qlora`; else None. The
        compute dtype is the profile's, not the document's bf16, which a V100 can only emulate."""
        from transformers import BitsAndBytesConfig

        if self.method == "lora-8bit":
            return BitsAndBytesConfig(load_in_8bit=True)
        if self.method != "qlora":
            return None
        nf4 = {**self.spec.bnb, "bnb_4bit_compute_dtype": self.profile.dtype_for(self.model)}
        return BitsAndBytesConfig(load_in_4bit=True, **nf4)

    def table(self) -> pd.DataFrame:
        """Each trainer argument and LoRA setting, its value and the source it came from."""
        lora = {f"lora.{k}": v for k, v in (self.lora_settings or {}).items()}
        settings = {**self.args, **lora}
        rows = {k: (str(settings[k]), self.sources[k]) for k in sorted(settings)}
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=["value", "from"])
        return frame.rename_axis(str(self))

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        stand_in = self.profile.stand_in(self.model)
        runs = f"{stand_in} standing in" if stand_in else self.checkpoint
        return f"{self.model} · {self.method} · {dtype} weights · {self.profile.name}: {runs}"

    def _repr_html_(self) -> str:  # a notebook shows the table
        return self.table()._repr_html_()


def resolve(profile: Profile, model: str, method: str, own: Mapping[str, Any]) -> Plan:
    """The one place the sources are merged (see the module docstring)."""
    if method not in models.METHODS:
        expected = ", ".join(models.METHODS)
        raise ValueError(f"unknown method {method!r}; expected one of: {expected}")
    spec = models.spec(model)
    document = {**spec.training, **(spec.lora_training if method != "full" else {})}
    imposed = profile.training(spec.name, method)
    args: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in zip(SOURCES, (COURSE, document, imposed, own), strict=True):
        args |= values
        sources |= dict.fromkeys(values, source)
    lora = None if method == "full" else _lora(spec, profile, sources)
    return Plan(
        model=spec.name,
        method=method,
        profile=profile,
        checkpoint=profile.checkpoint(spec.name),
        # Full fine-tuning keeps fp32 weights (mixed precision trains in 16 bits from that master
        # copy); adapters train on a base loaded in the profile's dtype.
        dtype=torch.float32 if method == "full" else profile.dtype_for(spec.name),
        args=MappingProxyType(args),
        sources=MappingProxyType(sources),
        lora_settings=None if lora is None else MappingProxyType(lora),
    )


def _lora(spec: models.Spec, profile: Profile, sources: dict[str, str]) -> dict[str, Any]:
    """The document's LoRA settings; under `cpu`, where SmolLM2 (a Llama) plays every decoder,
    target layers named after another architecture become the Llama layers doing the same job."""
    lora = dict(spec.lora)
    sources |= dict.fromkeys((f"lora.{k}" for k in lora), "document")
    targets = lora.get("target_modules")
    on_smollm2 = profile.sizes.models == "smollm2" and not spec.seq2seq  # T5 keeps a stand-in
    if targets and on_smollm2 and spec.family != "llama":
        lora["target_modules"] = models.llama_targets(targets)
        sources["lora.target_modules"] = "profile"
    return lora
