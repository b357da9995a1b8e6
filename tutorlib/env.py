"""Secrets and library versions, torch-free: the judge and the results records need both without
loading torch, so they live here rather than in `profile`. Nothing here writes to `os.environ`."""

from __future__ import annotations

import os
from importlib import metadata

# The libraries whose behaviour the course depends on; the first six go on the environment card.
_ON_CARD = ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets")
LIBRARIES = (*_ON_CARD, "accelerate", "openai")


def secret(name: str) -> str | None:
    """A secret from the environment, else from Colab's Secrets panel; blank counts as absent. The
    value is returned to the caller only: never printed, logged or written anywhere here."""
    value = os.environ.get(name, "").strip()
    if not value:
        try:  # Colab keeps secrets out of the environment until a notebook asks for them
            from google.colab import userdata  # type: ignore[import-not-found]

            value = (userdata.get(name) or "").strip()
        except Exception:  # not in Colab, no such secret, or access not granted to this notebook
            value = ""
    return value or None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour the course depends on."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "not installed"
    return versions
