"""python -m tools: `index` writes badges, set-up cells and the README table; `run` names a failing cell."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tools.cli import (
    _REPO_LINE_RE,
    INDEX_END,
    INDEX_START,
    SETUP_CELL,
    main,
    repository_url,
)
from tutorlib import paths, results

FORK = "https://github.com/me/fork"
OLD = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://example.org/old)"


def _home(tmp_path, monkeypatch, readme=f"intro\n{INDEX_START}\nstale\n{INDEX_END}\noutro\n"):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tutorlib]\nrepository = "https://github.com/a/b/"\n'
    )
    (tmp_path / "README.md").write_text(readme)
    monkeypatch.setenv("TUTORLIB_HOME", str(tmp_path))
    monkeypatch.delenv("TUTORLIB_REPO", raising=False)
    return tmp_path / "notebooks"


def _write(folder, name, *cells, **meta):
    nbformat.write(new_notebook(cells=list(cells), metadata={"tutorlib": meta}), folder / name)
    return folder / name


def _lesson_cells(path):
    """The code cells other than the set-up cell, in order."""
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and "google.colab" not in c.source]


def test_index_rewrites_copies_of_the_course_notebooks_and_is_idempotent(tmp_path, monkeypatch):
    real = sorted((paths.root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    readme = (paths.root() / "README.md").read_text(encoding="utf-8")
    folder = _home(tmp_path, monkeypatch, readme)
    for path in real:
        shutil.copy(path, folder / path.name)
    copies = sorted(folder.glob("*.ipynb"))
    assert copies, "the course has no notebooks to index"
    assert main(["index", "--repo", FORK]) == 0
    for path, original in zip(copies, real, strict=True):
        nb = nbformat.read(path, as_version=4)
        assert (
            f"(https://colab.research.google.com/github/me/fork/blob/main/notebooks/{path.name})"
            in nb.cells[0].source
        )
        setup = next(c for c in nb.cells if c.cell_type == "code")
        assert setup.source == SETUP_CELL.format(repo=FORK) and len(setup.source.splitlines()) <= 15
        assert _REPO_LINE_RE.search(setup.source)[0] == f'REPO = "{FORK}"'
        assert _lesson_cells(path) == _lesson_cells(original)  # nothing else changed
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    block = text.split(INDEX_START)[1].split(INDEX_END)[0]
    assert [line[:4] for line in block.strip().splitlines()[2:]] == [
        f"| {p.name[:2]}" for p in copies
    ]
    assert all(
        f"(notebooks/{p.name})" in block
        and f"github/me/fork/blob/main/notebooks/{p.name})" in block
        for p in copies
    )
    assert text.split(INDEX_START)[0] == readme.split(INDEX_START)[0]
    assert text.split(INDEX_END)[1] == readme.split(INDEX_END)[1]
    before = {p: p.read_bytes() for p in [*copies, tmp_path / "README.md"]}
    assert main(["index", "--repo", FORK]) == 0
    assert {p: p.read_bytes() for p in before} == before


def test_index_adds_a_set_up_cell_rather_than_overwrite_a_lesson_cell(tmp_path, monkeypatch):
    folder = _home(tmp_path, monkeypatch)
    path = _write(
        folder,
        "01_demo.ipynb",
        new_markdown_cell(f"# Demo lesson\n\n{OLD}"),
        new_code_cell("x = 1"),
        gpu="T4",
        time_full="5 min",
    )
    assert main(["index"]) == 0
    nb = nbformat.read(path, as_version=4)
    assert (
        "github/a/b/blob/main/notebooks/01_demo.ipynb)" in nb.cells[0].source
        and "example.org" not in nb.cells[0].source
    )
    assert [c.source for c in nb.cells[1:]] == [
        SETUP_CELL.format(repo="https://github.com/a/b"),
        "x = 1",
    ]
    readme = (tmp_path / "README.md").read_text()
    assert (
        "stale" not in readme
        and "| 01 | [Demo lesson](notebooks/01_demo.ipynb) | T4 | 5 min |" in readme
    )
    assert readme.startswith("intro\n") and readme.endswith("outro\n")


def test_index_needs_the_readme_markers(tmp_path, monkeypatch):
    folder = _home(tmp_path, monkeypatch, readme="no table here\n")
    path = _write(folder, "01_demo.ipynb", new_markdown_cell(f"# Demo\n\n{OLD}"))
    with pytest.raises(SystemExit, match="README.md has no <!-- notebook-index:start -->"):
        main(["index"])
    assert OLD in nbformat.read(path, as_version=4).cells[0].source  # nothing was half-written


def test_repository_url_prefers_the_flag_then_the_environment_then_pyproject(tmp_path, monkeypatch):
    _home(tmp_path, monkeypatch)
    assert repository_url() == "https://github.com/a/b"
    monkeypatch.setenv("TUTORLIB_REPO", "https://github.com/env/repo")
    assert repository_url() == "https://github.com/env/repo"
    assert repository_url(FORK) == FORK
    monkeypatch.delenv("TUTORLIB_REPO")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ValueError, match=r"no repository URL: pass --repo"):
        repository_url()


def _setup(tmp_path, monkeypatch, repo, colab=True):
    """Run the set-up cell as Colab would, installing into tmp_path/course instead of /content/course."""
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(SETUP_CELL.format(repo=repo).replace("/content/course", str(tmp_path / "course")), {})


def _fake_runs(monkeypatch, pip_result=0):
    """subprocess.run recorded: `git clone` makes the folder with colab_setup.py, pip returns `pip_result`."""
    calls = []

    def run(cmd, **kw):
        calls.append((cmd, kw))
        if cmd[0] == "git":
            Path(cmd[-1]).mkdir()
            shutil.copy(paths.root() / "colab_setup.py", cmd[-1])
        return subprocess.CompletedProcess(
            cmd, 0 if cmd[0] == "git" else pip_result, "", "pip says why"
        )

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_set_up_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab")
    )
    path = list(sys.path)
    _setup(tmp_path, monkeypatch, FORK, colab=False)
    assert sys.path == path


def test_set_up_cell_clones_without_prompting_and_installs_keeping_torch_and_the_kernel(
    tmp_path, monkeypatch, capsys
):
    calls = _fake_runs(monkeypatch)
    _setup(tmp_path, monkeypatch, FORK)
    course = str(tmp_path / "course")
    assert [cmd for cmd, _ in calls] == [
        ["git", "clone", "-q", "--depth", "1", FORK, course],
        [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/colab-kept.txt", "-e", course],
    ]
    assert calls[0][1]["env"]["GIT_TERMINAL_PROMPT"] == "0" and sys.path[0] == course
    pins = Path("/tmp/colab-kept.txt").read_text().splitlines()
    assert (
        f"torch=={metadata.version('torch')}" in pins
        and f"numpy=={metadata.version('numpy')}" in pins
    )
    assert "installed or upgraded: nothing" in capsys.readouterr().out


def test_set_up_cell_stops_for_a_restart_when_an_imported_package_was_upgraded(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "course").mkdir()
    shutil.copy(paths.root() / "colab_setup.py", tmp_path / "course")
    _fake_runs(monkeypatch)
    never_imported = "course-only-package"  # a new install that no test has imported
    installs = iter(
        [
            {"pyarrow": "18.1.0", "rouge-score": "0.1.2"},
            {"pyarrow": "21.0.0", "rouge-score": "0.1.2", never_imported: "1.0"},
        ]
    )
    monkeypatch.setattr(
        metadata,
        "distributions",
        lambda: [
            types.SimpleNamespace(metadata={"Name": n}, version=v)
            for n, v in next(installs).items()
        ],
    )
    import pyarrow  # noqa: F401 - Colab's kernel has it in memory before the set-up cell runs

    with pytest.raises(
        RuntimeError, match=r"Restart needed: pyarrow were imported before the upgrade"
    ):
        _setup(tmp_path, monkeypatch, FORK)
    assert f"pyarrow 18.1.0 -> 21.0.0, {never_imported} new -> 1.0" in capsys.readouterr().out


def test_set_up_cell_fails_clearly_when_the_repository_is_missing(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "no-such-repo")
    with pytest.raises(
        RuntimeError,
        match=r"set-up failed: `git clone -q --depth 1 \S+no-such-repo \S+course` \(output above\)\. Is \S+no-such-repo right",
    ):
        _setup(tmp_path, monkeypatch, missing)  # a real git, which must not wait for a password
    assert "no-such-repo" in capsys.readouterr().out  # git's own message is shown


def test_set_up_cell_shows_pip_output_when_the_install_fails(tmp_path, monkeypatch, capsys):
    (tmp_path / "course").mkdir()  # already cloned: only pip runs
    shutil.copy(paths.root() / "colab_setup.py", tmp_path / "course")
    _fake_runs(monkeypatch, pip_result=1)
    with pytest.raises(
        RuntimeError, match=r"set-up failed: `\S+ -m pip install -q -c \S+ -e \S+course`"
    ):
        _setup(tmp_path, monkeypatch, FORK)
    assert "pip says why" in capsys.readouterr().out


def test_run_executes_in_order_in_the_notebook_folder_and_prints_the_results(
    tmp_path, monkeypatch, capsys
):
    folder = _home(tmp_path, monkeypatch)
    monkeypatch.setenv("TUTORLIB_RUNS", str(tmp_path / "runs"))
    _write(folder, "01_a.ipynb", new_code_cell("open('order.txt', 'w').write('a')"))
    _write(folder, "02_b.ipynb", new_code_cell("open('order.txt', 'a').write('b')\nprint('hello')"))
    table = pd.DataFrame({"experiment": ["demo"], "main score": ["rouge1 0.5"]})
    monkeypatch.setattr(results, "summary_table", lambda profile_name: table)
    assert main(["run"]) == 0
    assert (folder / "order.txt").read_text() == "ab"
    executed = nbformat.read(tmp_path / "runs" / "02_b.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "hello\n"
    out = capsys.readouterr().out
    assert (
        "[1/2] 01_a.ipynb" in out
        and "[2/2] 02_b.ipynb" in out
        and re.search(r"demo +rouge1 0.5", out)
    )


def test_run_names_the_failing_cell_keeps_the_copy_and_survives_a_broken_table(
    tmp_path, monkeypatch, capsys
):
    folder = _home(tmp_path, monkeypatch)
    monkeypatch.setenv("TUTORLIB_RUNS", str(tmp_path / "runs"))
    path = _write(
        folder,
        "01_demo.ipynb",
        new_markdown_cell("# Demo"),
        new_code_cell("x = 1"),
        new_code_cell("raise ValueError('boom')"),
    )
    with pytest.raises(SystemExit, match=r"01_demo.ipynb, code cell 2: ValueError: boom"):
        main(["run", str(path)])
    copy = nbformat.read(tmp_path / "runs" / "01_demo.ipynb", as_version=4)
    assert copy.cells[2].outputs[0]["output_type"] == "error"
    with pytest.raises(SystemExit, match="no such notebook: .*missing.ipynb"):
        main(["run", str(folder / "missing.ipynb")])
    path = _write(folder, "01_demo.ipynb", new_code_cell("x = 1"))

    def broken(profile_name):
        raise KeyError("scores")

    monkeypatch.setattr(results, "summary_table", broken)
    assert main(["run", str(path)]) == 0
    assert "summary_table raised KeyError: 'scores'" in capsys.readouterr().err
