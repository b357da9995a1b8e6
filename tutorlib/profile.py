"""How big everything is: the `full`, `cpu` and `smoke` profiles (sizes in profiles.toml), one
chosen per notebook by `detect()` (ARCHITECTURE.md, "Profiles")."""

from __future__ import annotations

import logging
import os
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

import torch

from tutorlib import env, models
from tutorlib.plan import Plan, resolve

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
TRAINER_SEED = 42  # transformers' TrainingArguments.seed default (a test checks it), ours too


@dataclass(frozen=True)
class Sizes:
    """What one profile imposes (profiles.toml): the models it loads ("hub", "smollm2" for the
    decoders, or "random" stand-ins), examples per split (absent: all), trainer settings
    (`adapters`: what differs for LoRA runs) and generation settings."""

    models: str
    examples: Mapping[str, int]
    training: Mapping[str, Any]
    generation: Mapping[str, int]
    adapters: Mapping[str, Any] = field(default_factory=dict)


_TABLE = resources.files("tutorlib").joinpath("profiles.toml").read_text(encoding="utf-8")
SIZES = {name: Sizes(**sizes) for name, sizes in tomllib.loads(_TABLE).items()}
PROFILES = tuple(SIZES)


@dataclass(frozen=True)
class Profile:
    """The sizes and hardware of one notebook run, built by `detect()`. `max_steps` and
    `max_examples` are caps from `TUTORLIB_MAX_STEPS` and `TUTORLIB_MAX_EXAMPLES` (None: no cap)."""

    name: str
    device: str
    dtype: torch.dtype
    gpu_name: str | None = None
    seed: int = TRAINER_SEED
    model_overrides: Mapping[str, str] = field(default_factory=dict)
    max_steps: int | None = None
    max_examples: int | None = None

    @property
    def sizes(self) -> Sizes:
        return SIZES[self.name]

    @property
    def hub_models(self) -> bool:
        """True when the documents' own models are loaded (`full`), not stand-ins."""
        return self.sizes.models == "hub"

    def checkpoint(self, name: str) -> str:
        """What `from_pretrained` loads: the hub id (or its override) under `full`; under `cpu`
        SmolLM2 for every decoder; else a random stand-in built on this machine."""
        spec = models.spec(name)
        if self.hub_models:
            return self.model_overrides.get(spec.hub_id, spec.hub_id)
        from tutorlib import tiny  # deferred: building a stand-in trains a tokenizer

        if self.sizes.models == "smollm2" and not spec.seq2seq:
            return str(tiny.smollm2())
        return str(tiny.build(spec.name))

    def stand_in(self, name: str) -> str | None:
        """What actually plays `name` under this profile (None: the model itself)."""
        if self.hub_models:
            return None
        if self.sizes.models == "smollm2" and not models.spec(name).seq2seq:
            return "SmolLM2-135M-Instruct"
        return "random 2-layer stand-in"

    def dtype_for(self, name: str) -> torch.dtype:
        """The profile's dtype, except that a model that overflows in fp16 (T5) gets fp32."""
        if self.dtype == torch.float16 and not models.spec(name).fp16:
            return torch.float32
        return self.dtype

    def examples(self, split: str, n: int | None = None) -> int | None:
        """How many examples of a split to use: `n` (None: all), within this profile's sizes."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
        return _smallest(n, self.sizes.examples.get(split), self.max_examples)

    def steps(self, n: int) -> int:
        """A notebook's own number of training steps, within this profile's sizes."""
        return _smallest(n, self.sizes.training.get("max_steps"), self.max_steps)

    def training(self, name: str, method: str = "full") -> dict[str, Any]:
        """Trainer settings this profile imposes: precision always, then its sizes."""
        dtype = self.dtype_for(name)
        args: dict[str, Any] = {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}
        args |= self.sizes.training
        if method != "full":
            args |= self.sizes.adapters
        if self.max_steps:
            args["max_steps"] = self.max_steps
        if self.seed != TRAINER_SEED:  # a trainer reseeds with its own default otherwise
            args["seed"] = self.seed
        if self.max_examples:  # a step's examples too: memory on a CPU
            batch = models.spec(name).training.get("per_device_train_batch_size", 8)
            batch = min(self.max_examples, args.get("per_device_train_batch_size", batch))
            args |= {"per_device_train_batch_size": batch, "per_device_eval_batch_size": batch}
        return args

    def plan(self, model: str, method: str = "full", **own: Any) -> Plan:
        """Everything one run needs, resolved once: the document's settings, then this profile's,
        then `own` (the notebook's arguments). Printed, it is a table of each setting's source."""
        return resolve(self, model, method, own)

    def generation_args(self) -> dict[str, int]:
        """Summary length and batch size: the documents' 100 new tokens under `full`."""
        return dict(self.sizes.generation)

    def card(self) -> str:
        """One line: the profile, hardware, dtype, what plays the decoders, library versions."""
        versions = env.library_versions()
        hardware = f"{self.device} ({self.gpu_name})" if self.gpu_name else self.device
        libs = " · ".join(f"{lib} {versions[lib]}" for lib in env.LIBRARIES[:6])
        dtype = str(self.dtype).removeprefix("torch.")
        models_ = f" · models: {self.stand_in('llama-2-7b')}" if not self.hub_models else ""
        return f"profile={self.name} · device={hardware} · dtype={dtype}{models_} · {libs}"


def _smallest(*limits: int | None) -> int | None:
    """The smallest of the limits, where None means no limit."""
    return min((n for n in limits if n is not None), default=None)


def _positive_int(variable: str) -> int | None:
    """The environment variable as a positive int; None when unset; anything else names it."""
    value = os.environ.get(variable, "").strip()
    if value and (not value.isdigit() or int(value) < 1):
        raise ValueError(
            f"{variable}={value!r}: expected a positive whole number (or leave it unset)"
        )
    return int(value) if value else None


def _parse_overrides(text: str) -> dict[str, str]:
    """`TUTORLIB_MODEL_OVERRIDES="llama-2-7b=owner/copy,..."` -> {hub id: replacement}."""
    variable, out = "TUTORLIB_MODEL_OVERRIDES", {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key or not value or ";" in item:
            raise ValueError(
                f"{variable} entry {item!r} is malformed; expected 'model=owner/copy' entries "
                "separated by commas"
            )
        try:
            hub_id = models.spec(key).hub_id
        except ValueError as err:
            raise ValueError(f"{variable} entry {item!r}: {err}") from None
        if hub_id in out:
            raise ValueError(f"{variable} names {key!r} twice; expected one entry per model")
        out[hub_id] = value
    return out


def _quiet_libraries() -> None:
    """Hide library progress bars and advice-level warnings (`TUTORLIB_VERBOSE=1` keeps them)."""
    if os.environ.get("TUTORLIB_VERBOSE"):
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Notices a learner can do nothing about: trl/peft read a renamed model attribute, and peft
    # says it handles GPT-2's Conv1D layers correctly.
    warnings.filterwarnings("ignore", ".*gradient_checkpointing.*", FutureWarning)
    warnings.filterwarnings("ignore", ".*use_reentrant parameter.*", UserWarning)
    warnings.filterwarnings("ignore", "fan_in_fan_out is set to False", UserWarning)


def detect(name: str | None = None, *, seed: int = TRAINER_SEED) -> Profile:
    """Choose the profile (argument, `TUTORLIB_PROFILE`, else `full` with CUDA and `cpu`
    without), read the course's settings from the environment once, and seed everything. The
    caps `TUTORLIB_MAX_STEPS` and `TUTORLIB_MAX_EXAMPLES` apply to `full` and `cpu`."""
    import transformers

    cuda = torch.cuda.is_available()
    named = name or os.environ.get("TUTORLIB_PROFILE") or ("full" if cuda else "cpu")
    chosen = named.strip().lower()
    if chosen not in PROFILES:
        source = "" if name else " (from TUTORLIB_PROFILE)"
        expected = ", ".join(PROFILES)
        raise ValueError(f"unknown profile {chosen!r}{source}; expected one of: {expected}")
    if chosen == "full" and not cuda:
        log.warning("profile 'full' without a CUDA GPU: real 7B models will not fit or take hours")
    overrides = _parse_overrides(os.environ.get("TUTORLIB_MODEL_OVERRIDES", ""))
    caps = [_positive_int(f"TUTORLIB_MAX_{what}") for what in ("STEPS", "EXAMPLES")]
    transformers.set_seed(seed)
    _quiet_libraries()
    if chosen == "smoke" and not cuda:
        # 64-wide matrices gain nothing from threads, and on a busy 2-core machine OpenMP
        # threads waiting for each other made a training step ~25x slower.
        torch.set_num_threads(1)
    bf16 = cuda and torch.cuda.is_bf16_supported()  # Ampere and newer; V100 and T4 get fp16
    return Profile(
        name=chosen,
        device="cuda" if cuda else "cpu",
        dtype=torch.bfloat16 if bf16 else (torch.float16 if cuda else torch.float32),
        gpu_name=torch.cuda.get_device_name(0) if cuda else None,
        seed=seed,
        model_overrides=MappingProxyType(overrides),
        max_steps=None if chosen == "smoke" else caps[0],
        max_examples=None if chosen == "smoke" else caps[1],
    )


def hub_login(profile: Profile) -> bool:
    """Say whether a gated model (Llama-2) can be loaded: is there a hub token? The hub client
    reads `HF_TOKEN` from the environment or Colab's Secrets panel itself; nothing is written."""
    if not profile.hub_models:
        print(f"{profile.name} profile: its models are on this machine, no hub token needed")
        return False
    if not (env.secret("HF_TOKEN") or env.secret("HUGGING_FACE_HUB_TOKEN")):
        print(
            "no Hugging Face token found: accept the model's licence on its hub page, then set "
            "HF_TOKEN (or add it in Colab's Secrets panel), or point TUTORLIB_MODEL_OVERRIDES at "
            "an ungated copy"
        )
        return False
    print("the hub client will use the Hugging Face token from HF_TOKEN / Colab secrets")
    return True
