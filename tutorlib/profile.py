"""How big everything is: the `full` and `smoke` profiles.

A notebook calls `detect()` once and then asks the profile for names and sizes instead of branching
on where it runs. `full` is the documents' setting (real hub models and data on a CUDA GPU); `smoke`
runs the same code on tiny stand-ins built locally, the bundled samples and a few training steps.
Under `full`, `TUTORLIB_MAX_STEPS` caps training steps and `TUTORLIB_MAX_EXAMPLES` test examples and
batch sizes (`make full-check` runs `full` on a CPU that way).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch

from tutorlib import models

log = logging.getLogger(__name__)

PROFILES = ("full", "smoke")
SMOKE_EXAMPLES = {"train": 32, "validation": 8, "test": 4}
# What `smoke` imposes on a trainer: a short run on short sequences, at a learning rate high enough
# for a random 64-wide model to learn something in 30 steps, on the CPU in fp32.
SMOKE_TRAINING = {
    "max_steps": 30, "learning_rate": 2e-3, "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 4, "gradient_accumulation_steps": 1, "logging_steps": 2,
    "eval_strategy": "steps", "eval_steps": 10, "save_strategy": "no", "max_length": 384, "use_cpu": True,
}
_GENERATION = {"full": {"max_new_tokens": 100, "batch_size": 8}, "smoke": {"max_new_tokens": 24, "batch_size": 4}}
_CARD_LIBRARIES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour the course depends on."""
    versions = {}
    for lib in (*_CARD_LIBRARIES, "accelerate", "openai"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "not installed"
    return versions


def _cap(variable: str) -> int | None:
    """The environment variable as a positive int, None when unset; anything else is an error naming it."""
    value = os.environ.get(variable, "").strip()
    if value and (not value.isdigit() or int(value) < 1):
        raise ValueError(f"{variable}={value!r}: expected a positive whole number (or leave it unset)")
    return int(value) if value else None


def _parse_overrides(text: str) -> dict[str, str]:
    """`TUTORLIB_MODEL_OVERRIDES="meta-llama/Llama-2-7b-hf=owner/copy,..."` -> {hub id: replacement}."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not item:
            continue
        if not sep or not key or not value or ";" in item:
            raise ValueError(
                f"TUTORLIB_MODEL_OVERRIDES entry {item!r} is malformed; expected 'model=owner/copy' "
                "entries separated by commas"
            )
        hub_id = models.spec(key).hub_id
        if hub_id in out:
            raise ValueError(f"TUTORLIB_MODEL_OVERRIDES names {key!r} twice; expected one entry per model")
        out[hub_id] = value
    return out


@dataclass(frozen=True)
class Profile:
    """The sizes and hardware of one notebook run. Build it with `detect()`."""

    name: str
    device: str
    dtype: torch.dtype
    gpu_name: str | None = None
    seed: int = 42
    model_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"

    def model(self, name: str) -> str:
        """What `from_pretrained` loads: the hub id (or its override) under `full`, a stand-in folder under `smoke`."""
        spec = models.spec(name)
        if self.is_smoke:
            from tutorlib import tiny  # deferred: building stand-ins trains a tokenizer

            return str(tiny.build(spec.name))
        return self.model_overrides.get(spec.hub_id, spec.hub_id)

    def dtype_for(self, name: str) -> torch.dtype:
        """The profile's dtype, except that a model that overflows in fp16 (T5) gets fp32 instead."""
        if self.dtype == torch.float16 and not models.spec(name).fp16:
            return torch.float32
        return self.dtype

    def examples(self, split: str, n: int | None = None) -> int | None:
        """How many examples of a split to use: `n` under `full` (None = all), a handful under `smoke`."""
        if split not in SMOKE_EXAMPLES:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SMOKE_EXAMPLES)}")
        if not self.is_smoke:
            return n if (cap := _cap("TUTORLIB_MAX_EXAMPLES")) is None else cap if n is None else min(cap, n)
        return SMOKE_EXAMPLES[split] if n is None else min(n, SMOKE_EXAMPLES[split])

    def train_args(self, name: str) -> dict[str, Any]:
        """Trainer settings this profile imposes on top of a document's: sizes under `smoke`, precision always."""
        dtype = self.dtype_for(name)
        args: dict[str, Any] = {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}
        args.update(report_to="none", disable_tqdm=False)  # a progress bar, not a printed dict per log step
        if self.is_smoke:
            return args | SMOKE_TRAINING
        if steps := _cap("TUTORLIB_MAX_STEPS"):
            args["max_steps"] = steps
        if cap := _cap("TUTORLIB_MAX_EXAMPLES"):  # a step's examples too: memory on a CPU
            batch = min(cap, models.spec(name).training.get("per_device_train_batch_size", 8))
            args.update(per_device_train_batch_size=batch, per_device_eval_batch_size=batch)
        return args

    def generation_args(self) -> dict[str, int]:
        """Summary length and batch size: the documents' 100 new tokens under `full`, short under `smoke`."""
        return dict(_GENERATION[self.name])

    def card(self) -> str:
        """One line naming the profile, the hardware, the dtype and the library versions."""
        versions = library_versions()
        hardware = f"{self.device} ({self.gpu_name})" if self.gpu_name else self.device
        libs = " · ".join(f"{lib} {versions[lib]}" for lib in _CARD_LIBRARIES)
        return f"profile={self.name} · device={hardware} · dtype={str(self.dtype).removeprefix('torch.')} · {libs}"


def _quiet_libraries() -> None:
    """Hide library progress bars and advice-level warnings (`TUTORLIB_VERBOSE=1` keeps them); errors still show."""
    if os.environ.get("TUTORLIB_VERBOSE"):
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Notices a learner can do nothing about: trl/peft read a renamed model attribute, and peft says it
    # handles GPT-2's Conv1D layers correctly.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*use_reentrant parameter.*", category=UserWarning)
    warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False", category=UserWarning)


def detect(name: str | None = None, *, seed: int = 42) -> Profile:
    """Choose the profile (argument, `TUTORLIB_PROFILE`, else `full` with CUDA and `smoke` without) and seed everything."""
    import transformers

    cuda = torch.cuda.is_available()
    chosen = (name or os.environ.get("TUTORLIB_PROFILE") or ("full" if cuda else "smoke")).strip().lower()
    if chosen not in PROFILES:
        source = "" if name else " (from TUTORLIB_PROFILE)"
        raise ValueError(f"unknown profile {chosen!r}{source}; expected one of: {', '.join(PROFILES)}")
    if chosen == "full" and not cuda:
        log.warning("profile 'full' without a CUDA GPU: real 7B models will not fit or will take hours")
    overrides = _parse_overrides(os.environ.get("TUTORLIB_MODEL_OVERRIDES", ""))
    os.environ["TUTORLIB_PROFILE"] = chosen  # data.load(name) follows the profile chosen here
    transformers.set_seed(seed)
    _quiet_libraries()
    if chosen == "smoke" and not cuda:
        # 64-wide matrices gain nothing from threads, and on a busy 2-core machine OpenMP threads
        # waiting for each other made a training step ~25x slower.
        torch.set_num_threads(1)
    bf16 = cuda and torch.cuda.is_bf16_supported()  # Ampere and newer; V100 and T4 get fp16
    return Profile(
        name=chosen, device="cuda" if cuda else "cpu",
        dtype=torch.bfloat16 if bf16 else (torch.float16 if cuda else torch.float32),
        gpu_name=torch.cuda.get_device_name(0) if cuda else None, seed=seed, model_overrides=overrides,
    )


def secret(name: str) -> str | None:
    """A secret from the environment, else from Colab's Secrets panel; blank counts as absent. Never printed."""
    value = os.environ.get(name, "").strip()
    if not value:
        try:  # Colab keeps secrets out of the environment until a notebook asks for them
            from google.colab import userdata  # type: ignore[import-not-found]

            value = (userdata.get(name) or "").strip()
        except Exception:  # not in Colab, no such secret, or access not granted to this notebook
            value = ""
    return value or None


def hub_login(profile: Profile) -> bool:
    """Make a gated model (Llama-2) loadable by exporting `HF_TOKEN` for the hub client; says what it found."""
    if profile.is_smoke:
        print("smoke profile: stand-in models are built locally, no hub token needed")
        return False
    token = secret("HF_TOKEN") or secret("HUGGING_FACE_HUB_TOKEN")
    if not token:
        print("no Hugging Face token found: accept the model's licence on its hub page, then set HF_TOKEN "
              "(or add it in Colab's Secrets panel), or point TUTORLIB_MODEL_OVERRIDES at an ungated copy")
        return False
    os.environ["HF_TOKEN"] = token  # huggingface_hub reads it from here; nothing is written to disk
    print("using the Hugging Face token from HF_TOKEN / Colab secrets")
    return True
