"""How big everything is: the `full` and `smoke` profiles.

A notebook calls `detect()` once and then asks the profile for names and sizes instead of branching
on where it runs. `full` is the source documents' setting (real hub models, real data, their
hyper-parameters, a CUDA GPU); `smoke` runs the very same code on tiny stand-in models built
locally, the bundled sample data and a few training steps, so it finishes on a laptop CPU or in CI
without any network.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any

import torch

log = logging.getLogger(__name__)

PROFILES = ("full", "smoke")

# Logical name -> the hub id the documents load. A hub id is accepted wherever a logical name is.
MODELS: Mapping[str, str] = MappingProxyType(
    {
        "distilgpt2": "distilgpt2",
        "llama-2-7b": "meta-llama/Llama-2-7b-hf",
        "falcon-7b": "tiiuae/falcon-7b",
        "phi-2": "microsoft/phi-2",
        "flan-t5-base": "google/flan-t5-base",
    }
)

# Architecture family of each hub id; decides dtype rules, stand-in builder and LoRA targets.
FAMILIES: Mapping[str, str] = MappingProxyType(
    {
        "distilgpt2": "gpt2",
        "meta-llama/Llama-2-7b-hf": "llama",
        "tiiuae/falcon-7b": "falcon",
        "microsoft/phi-2": "phi",
        "google/flan-t5-base": "t5",
    }
)

# T5 was pre-trained in bf16 and its activations overflow fp16 (NaN losses), so it never runs in fp16.
_NO_FP16 = frozenset({"t5"})

# Example counts per split under `smoke`; `full` uses whatever the notebook asks for.
SMOKE_EXAMPLES: Mapping[str, int] = MappingProxyType({"train": 32, "validation": 8, "test": 4})

# Trainer settings the profile imposes over the document's values. `smoke` trains a few steps on
# short sequences; `full` keeps the document's settings untouched.
_TRAIN_OVERRIDES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "full": MappingProxyType({}),
        "smoke": MappingProxyType(
            {
                # Enough steps, at a learning rate high enough for a random 64-wide model, that the
                # loss curve visibly drops; ~10 s per run on a 2-core CPU.
                "max_steps": 30,
                "learning_rate": 2e-3,
                "per_device_train_batch_size": 4,
                "per_device_eval_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "logging_steps": 2,
                "eval_steps": 10,
                "save_strategy": "no",
                "max_length": 384,
            }
        ),
    }
)

_GENERATION: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "full": MappingProxyType({"max_new_tokens": 100, "batch_size": 8}),
        "smoke": MappingProxyType({"max_new_tokens": 24, "batch_size": 4}),
    }
)

_CARD_LIBRARIES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets")


def canonical(name: str) -> str:
    """Map a logical model name or hub id to the document's hub id; unknown names list the valid ones."""
    if name in MODELS:
        return MODELS[name]
    if name in FAMILIES:
        return name
    valid = ", ".join(sorted(set(MODELS) | set(FAMILIES)))
    raise ValueError(f"unknown model name {name!r}; expected one of: {valid}")


def family(name: str) -> str:
    """The architecture family (`gpt2`, `llama`, `falcon`, `phi`, `t5`) of a logical name or hub id."""
    return FAMILIES[canonical(name)]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour the course depends on."""
    versions = {}
    for lib in (*_CARD_LIBRARIES, "accelerate", "openai"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "not installed"
    return versions


def _parse_overrides(text: str) -> dict[str, str]:
    """`TUTORLIB_MODEL_OVERRIDES="meta-llama/Llama-2-7b-hf=someone/llama-2-7b-copy,..."` -> dict."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ValueError(
                f"TUTORLIB_MODEL_OVERRIDES entry {item!r} has no '='; expected 'model=replacement_id'"
            )
        key, value = (s.strip() for s in item.split("=", 1))
        out[canonical(key)] = value
    return out


@dataclass(frozen=True)
class Profile:
    """The sizes and hardware of one notebook run. Build it with `detect()`."""

    name: str
    device: str
    dtype: torch.dtype
    gpu_name: str | None = None
    seed: int = 42
    model_overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"

    def model(self, name: str) -> str:
        """What `from_pretrained` should load for a logical model: a hub id (`full`) or a stand-in folder (`smoke`)."""
        hub_id = canonical(name)
        if self.is_smoke:
            from tutorlib import tiny  # deferred: building stand-ins imports transformers

            return str(tiny.build(hub_id))
        return self.model_overrides.get(hub_id, hub_id)

    def dtype_for(self, name: str) -> torch.dtype:
        """The compute dtype for one model: the profile's, except fp16 falls back to fp32 for T5."""
        if self.dtype == torch.float16 and family(name) in _NO_FP16:
            return torch.float32
        return self.dtype

    def examples(self, split: str, n: int | None = None) -> int | None:
        """How many examples of a split to use: `n` under `full` (None = all), a handful under `smoke`."""
        if split not in SMOKE_EXAMPLES:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SMOKE_EXAMPLES)}")
        if not self.is_smoke:
            return n
        cap = SMOKE_EXAMPLES[split]
        return cap if n is None else min(n, cap)

    def train_args(self, **document_values: Any) -> dict[str, Any]:
        """The document's trainer settings with this profile's overrides applied on top."""
        args = dict(document_values)
        args.update(_TRAIN_OVERRIDES[self.name])
        if self.is_smoke:
            args.pop("num_train_epochs", None)  # max_steps decides the length of a smoke run
        return args

    def generation_args(self, **document_values: Any) -> dict[str, Any]:
        """Generation length and batch size: the document's under `full`, short under `smoke`."""
        args = dict(_GENERATION["full"])
        args.update(document_values)
        if self.is_smoke:
            args.update(_GENERATION["smoke"])
        return args

    def card(self) -> str:
        """One line naming the profile, the hardware, the dtype and the library versions."""
        versions = library_versions()
        hardware = f"{self.device} ({self.gpu_name})" if self.gpu_name else self.device
        libs = " · ".join(f"{lib} {versions[lib]}" for lib in _CARD_LIBRARIES)
        return f"profile={self.name} · device={hardware} · dtype={str(self.dtype).removeprefix('torch.')} · {libs}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a re-run draws the same numbers."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def quiet_libraries() -> None:
    """Hide the libraries' internal progress bars and advisory warnings so notebook output stays readable.

    Dataset preprocessing bars, weight-loading bars and transformers' advice-level warnings would bury
    the lesson's own output; errors still show. `TUTORLIB_VERBOSE=1` keeps everything.
    """
    if os.environ.get("TUTORLIB_VERBOSE"):
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Library-internal notices a learner can do nothing about: trl/peft still read a model attribute
    # by its pre-v5 name, and peft announces that it handles GPT-2's Conv1D layers correctly.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False", category=UserWarning)


def _default_dtype() -> torch.dtype:
    if not torch.cuda.is_available():
        return torch.float32
    # bf16 needs Ampere or newer (A100, L4, H100); V100 and T4 fall back to fp16.
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def detect(
    name: str | None = None, *, seed: int = 42, model_overrides: Mapping[str, str] | None = None
) -> Profile:
    """Choose the profile (argument, else `TUTORLIB_PROFILE`, else `full` with CUDA and `smoke` without), seed all RNGs.

    `model_overrides` (or `TUTORLIB_MODEL_OVERRIDES="hub_id=other_id,..."`) swaps a document's hub id
    for another copy of the same weights under `full`, e.g. an ungated mirror of Llama-2-7B.
    """
    chosen = name or os.environ.get("TUTORLIB_PROFILE") or ("full" if torch.cuda.is_available() else "smoke")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r}; expected one of: {', '.join(PROFILES)}")
    cuda = torch.cuda.is_available()
    if chosen == "full" and not cuda:
        log.warning(
            "profile 'full' without a CUDA GPU: real 7B models will not fit or will take hours on CPU"
        )
    overrides = _parse_overrides(os.environ.get("TUTORLIB_MODEL_OVERRIDES", ""))
    overrides.update({canonical(k): v for k, v in (model_overrides or {}).items()})
    seed_everything(seed)
    quiet_libraries()
    if chosen == "smoke" and not cuda:
        # The stand-ins' matrices are 64 wide: splitting them over threads buys nothing, and on a busy
        # 2-core machine OpenMP threads waiting for each other made a training step ~25x slower.
        torch.set_num_threads(1)
    return Profile(
        name=chosen,
        device="cuda" if cuda else "cpu",
        dtype=_default_dtype(),
        gpu_name=torch.cuda.get_device_name(0) if cuda else None,
        seed=seed,
        model_overrides=MappingProxyType(overrides),
    )


def hub_token() -> str | None:
    """A Hugging Face token from `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else Colab's Secrets panel."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:  # Colab keeps secrets out of the environment until asked for
        from google.colab import userdata  # type: ignore[import-not-found]

        return userdata.get("HF_TOKEN")
    except Exception:  # not in Colab, no such secret, or access not granted to this notebook
        return None


def hub_login(profile: Profile) -> bool:
    """Make a gated model (Llama-2) loadable: export the token for the hub client. Never prints the token.

    Under `smoke` nothing is downloaded, so no token is needed. Returns whether a token is in place.
    """
    if profile.is_smoke:
        print("smoke profile: stand-in models are built locally, no hub token needed")
        return False
    token = hub_token()
    if not token:
        print(
            "no Hugging Face token found: set HF_TOKEN (or add it in Colab's Secrets panel) after accepting "
            "the model's licence on its hub page, or point TUTORLIB_MODEL_OVERRIDES at an ungated copy"
        )
        return False
    os.environ["HF_TOKEN"] = token  # huggingface_hub reads it from here; nothing is written to disk
    print("using the Hugging Face token from HF_TOKEN / Colab secrets")
    return True
