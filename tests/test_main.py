"""python -m tutorlib: `index` rewrites badges from one URL; `run` names the failing notebook and cell."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tutorlib.__main__ import INDEX_END, INDEX_START, main

OLD = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://example.org/old)"


def _course(tmp_path, monkeypatch, cells):
    (tmp_path / "pyproject.toml").write_text('[tool.tutorlib]\nrepository = "https://github.com/a/b"\n')
    (tmp_path / "README.md").write_text(f"intro\n{INDEX_START}\nstale\n{INDEX_END}\noutro\n")
    (tmp_path / "notebooks").mkdir()
    nb = new_notebook(cells=cells, metadata={"tutorlib": {"gpu": "T4", "time_full": "5 min"}})
    path = tmp_path / "notebooks" / "01_demo.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setenv("TUTORLIB_HOME", str(tmp_path))
    monkeypatch.setenv("TUTORLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("TUTORLIB_REPO", raising=False)
    return path


def test_index_rewrites_badges_setup_cell_and_readme(tmp_path, monkeypatch):
    path = _course(
        tmp_path, monkeypatch, [new_markdown_cell(f"# Demo lesson\n\n{OLD}"), new_code_cell('REPO = "x"')]
    )
    assert main(["index", "--repo", "https://github.com/me/fork"]) == 0
    nb = nbformat.read(path, as_version=4)
    assert "github/me/fork/blob/main/notebooks/01_demo.ipynb" in nb.cells[0].source
    assert nb.cells[1].source == 'REPO = "https://github.com/me/fork"'
    readme = (tmp_path / "README.md").read_text()
    assert "stale" not in readme and "[Demo lesson](notebooks/01_demo.ipynb) | T4 | 5 min" in readme
    assert readme.startswith("intro\n") and readme.endswith("outro\n")


def test_run_stops_at_the_failing_cell_and_keeps_the_executed_copy(tmp_path, monkeypatch, capsys):
    path = _course(tmp_path, monkeypatch, [new_code_cell("x = 1"), new_code_cell("raise ValueError('boom')")])
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "01_demo.ipynb failed at code cell 2" in err and "ValueError: boom" in err
    assert (tmp_path / "runs" / "01_demo.ipynb").is_file()
