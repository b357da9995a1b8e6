"""Shared test set-up: smoke profile, offline hub, no sockets beyond loopback, a private cache."""

from __future__ import annotations

import os
import socket

import pytest
import torch

# Set before any test module imports transformers/datasets/huggingface_hub.
os.environ["TUTORLIB_PROFILE"] = "smoke"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_real_connect = socket.socket.connect
_real_create_connection = socket.create_connection


class NetworkBlocked(RuntimeError):
    """Raised when a test tries to reach anything but loopback."""


def _host(address) -> str:
    return address[0] if isinstance(address, tuple) else str(address)


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address) not in _LOOPBACK:
        raise NetworkBlocked(f"test tried to open a network connection to {address!r}")
    return _real_connect(self, address)


def _guarded_create_connection(address, *args, **kwargs):
    if _host(address) not in _LOOPBACK:
        raise NetworkBlocked(f"test tried to open a network connection to {address!r}")
    return _real_create_connection(address, *args, **kwargs)


# As tutorlib.profile.detect() does under smoke: one thread is faster for the 64-wide stand-ins, and
# far faster when other processes share the cores.
torch.set_num_threads(1)

socket.socket.connect = _guarded_connect
socket.create_connection = _guarded_create_connection


@pytest.fixture(scope="session", autouse=True)
def _private_dirs(tmp_path_factory):
    """Results, images and runs go to temporary folders; the stand-in cache is shared per session."""
    base = tmp_path_factory.mktemp("tutorlib")
    os.environ.setdefault("TUTORLIB_CACHE", str(base / "cache"))
    os.environ["TUTORLIB_RESULTS"] = str(base / "results")
    os.environ["TUTORLIB_IMAGES"] = str(base / "images")
    os.environ["TUTORLIB_RUNS"] = str(base / "runs")
    yield base
