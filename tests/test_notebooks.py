"""House rules of the course notebooks (they are executed by nbmake from `make test`; this checks their shape)."""

from __future__ import annotations

import re

import nbformat
import pytest

from tutorlib import paths
from tutorlib.__main__ import _REPO_LINE_RE, course_notebooks, repository_url

NOTEBOOKS = course_notebooks()


def test_the_course_has_its_numbered_notebooks():
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names == sorted(names) and names[:4] == ["00", "01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_conventions(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    code = [c for c in cells if c.cell_type == "code"]
    # Title with a Colab badge for this very notebook, then set-up, then the profile and its card.
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert f"/blob/main/notebooks/{path.name})" in cells[0].source
    assert _REPO_LINE_RE.search(code[0].source) and "google.colab" in code[0].source
    assert f'REPO = "{repository_url()}"' in code[0].source
    assert "detect()" in code[1].source and "card()" in code[1].source
    # Committed without outputs; cells short enough to read; GPU need stated for the README index.
    assert all(not c.outputs and c.execution_count is None for c in code)
    long = [i for i, c in enumerate(code[1:], 2) if len(c.source.splitlines()) > 15]
    assert not long, f"code cells over 15 lines: {long}"
    assert {"gpu", "time_full"} <= set(nb.metadata.get("tutorlib", {}))


def test_readme_index_lists_every_notebook():
    readme = (paths.root() / "README.md").read_text()
    for path in NOTEBOOKS:
        assert re.search(rf"\(notebooks/{re.escape(path.name)}\)", readme), f"{path.name} missing from README"
