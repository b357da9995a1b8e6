"""Where the course keeps things on disk: the repository root, caches, results, images, runs.

Notebooks execute with their own folder as the working directory (Jupyter, nbmake, Colab), so
every path is resolved from one root instead of from the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def root() -> Path:
    """The course root: `TUTORLIB_HOME`, else the checkout this package was installed from.

    An editable install (what `make` and the Colab set-up cell do) sits inside the checkout, so the
    parent of the package folder holds `pyproject.toml`. A plain wheel install has no checkout; then
    the current directory is the root.
    """
    env = os.environ.get("TUTORLIB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if (_PACKAGE_DIR.parent / "pyproject.toml").is_file():
        return _PACKAGE_DIR.parent
    return Path.cwd()


def data_dir() -> Path:
    """The bundled sample datasets (written by the project, in each dataset's released format)."""
    return root() / "data"


def cache_dir() -> Path:
    """Built stand-in models and other re-creatable artefacts: `TUTORLIB_CACHE` or ~/.cache/tutorlib."""
    env = os.environ.get("TUTORLIB_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tutorlib"


def results_dir(profile_name: str) -> Path:
    """One JSON record per experiment lives here: `results/<profile>/` (`TUTORLIB_RESULTS` moves the parent)."""
    env = os.environ.get("TUTORLIB_RESULTS")
    return (Path(env).expanduser().resolve() if env else root() / "results") / profile_name


def images_dir() -> Path:
    """Figures the notebooks draw (`TUTORLIB_IMAGES` moves it, e.g. to a temporary folder in tests)."""
    env = os.environ.get("TUTORLIB_IMAGES")
    return Path(env).expanduser().resolve() if env else root() / "images"


def runs_dir() -> Path:
    """Executed notebook copies and training outputs (git-ignored)."""
    env = os.environ.get("TUTORLIB_RUNS")
    return Path(env).expanduser().resolve() if env else root() / "runs"
