"""Where the course keeps things on disk, from one root rather than the cwd (notebooks run in their
own folder). Environment variables move each place, e.g. to a temporary folder or Google Drive."""

from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _from_env(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser().resolve() if value else default


def root() -> Path:
    """`TUTORLIB_HOME`, else an editable install's checkout (with pyproject.toml), else the cwd."""
    return _from_env(
        "TUTORLIB_HOME", _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
    )


def data_dir() -> Path:
    """The bundled sample datasets, in each dataset's released format."""
    return root() / "data"


def cache_dir() -> Path:
    """Re-creatable artefacts, e.g. stand-in models: `TUTORLIB_CACHE`, else ~/.cache/tutorlib."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return _from_env("TUTORLIB_CACHE", base / "tutorlib")


def results_dir(profile_name: str) -> Path:
    """One JSON file per experiment: `results/<profile>/` (`TUTORLIB_RESULTS` moves the parent)."""
    return _from_env("TUTORLIB_RESULTS", root() / "results") / profile_name


def images_dir() -> Path:
    """Figures the notebooks draw (`TUTORLIB_IMAGES` moves them)."""
    return _from_env("TUTORLIB_IMAGES", root() / "images")


def runs_dir() -> Path:
    """Executed notebook copies and training outputs, git-ignored (`TUTORLIB_RUNS` moves them)."""
    return _from_env("TUTORLIB_RUNS", root() / "runs")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` whole or not at all: see `write_atomic_bytes`."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file beside it, then a rename, so
    an interruption leaves the previous content (or no file), never half of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # still there only when the write failed
