"""Shared test set-up: smoke profile, offline hub, no sockets beyond loopback, a private cache,
the environment restored after every test, and a fake OpenAI-compatible API on loopback."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


@pytest.fixture(autouse=True)
def _environment_as_found():
    """Every test leaves os.environ as it found it, whatever it set (the notebook kernels that a
    later test starts inherit the environment)."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class FakeAPI:
    """An OpenAI-compatible server on 127.0.0.1 that the real SDK talks to. `route(method, path,
    body)` returns (status, JSON payload) for each request; every request is kept in `hits` (with
    its JSON body parsed when it is JSON). Answers carry `retry-after-ms: 1`, which the SDK honours,
    so its retries take no time."""

    def __init__(self, route: Callable[[str, str, bytes], tuple[int, dict]]) -> None:
        self.hits: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:  # a multipart file upload
                    parsed = None
                hit = {"method": method, "path": self.path, "raw": body, "body": parsed}
                api.hits.append(hit | {"auth": self.headers.get("Authorization")})
                status, payload = route(method, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "1")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the handler's required name
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_api(monkeypatch):
    """`fake_api(route)` starts a FakeAPI (proxies unset, so the SDK reaches loopback directly)."""
    for name in _PROXIES:
        monkeypatch.delenv(name, raising=False)
    started: list[FakeAPI] = []

    def start(route: Callable[[str, str, bytes], tuple[int, dict]]) -> FakeAPI:
        started.append(FakeAPI(route))
        return started[-1]

    yield start
    for api in started:
        api.close()
