"""The executed copies in executed/ (`make executed`) show the code the notebooks now hold."""

from __future__ import annotations

import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools import executed
from tools.cli import course_notebooks

RERUN = "a notebook changed since its executed copy was made: run `make executed NB=..`"


@pytest.mark.parametrize("source", course_notebooks(), ids=lambda p: p.name[:2])
def test_each_executed_copy_has_its_notebooks_code(source):
    copy = executed.executed_dir() / source.name
    assert not executed.differences(source, copy), RERUN


def test_every_copy_says_how_it_was_made():
    for source in course_notebooks():
        first = nbformat.read(executed.executed_dir() / source.name, as_version=4).cells[0]
        assert executed.HEADER_TAG in first.metadata.get("tags", [])
        assert "`cpu`" in first.source and f"notebooks/{source.name}" in first.source


def _notebook(*code: str):
    cells = [new_markdown_cell("# A lesson")] + [new_code_cell(c) for c in code]
    return new_notebook(cells=cells)


def test_an_edited_source_cell_is_named(tmp_path):
    source, copy = tmp_path / "source.ipynb", tmp_path / "copy" / "source.ipynb"
    nbformat.write(_notebook("x = 1", "print(x)"), source)
    copy.parent.mkdir()
    shutil.copy(source, copy)
    assert executed.differences(source, copy) == []
    nbformat.write(_notebook("x = 2", "print(x)"), source)
    assert executed.differences(source, copy) == [
        "source.ipynb: code cell 1 differs from the source"
    ]
    nbformat.write(_notebook("x = 2"), source)
    assert executed.differences(source, copy) == ["source.ipynb: 2 code cells, the source has 1"]


def test_a_missing_copy_is_named(tmp_path):
    source = tmp_path / "source.ipynb"
    nbformat.write(_notebook("x = 1"), source)
    assert executed.differences(source, tmp_path / "nowhere.ipynb") == [
        "nowhere.ipynb: no executed copy"
    ]


def test_cleaning_drops_progress_bars_and_absolute_paths():
    nb = _notebook("train()")
    cell = nb.cells[1]
    bar = new_output("stream", name="stderr", text=" 50%|█████     | 1/2 [00:03<00:03, 3.2s/it]\r")
    warning = new_output("stream", name="stderr", text="/tmp/ipykernel_301/8812.py:2: UserWarning")
    printed = new_output("stream", name="stdout", text="saved to /tmp/xyz/runs/01/adapter")
    cell.outputs = [bar, warning, printed]
    executed._clean(nb, {"/tmp/xyz/runs": "runs"})
    assert [o.text for o in cell.outputs] == ["<cell>:2: UserWarning", "saved to runs/01/adapter"]


def test_prose_is_copied_over_only_while_the_code_is_unchanged(tmp_path):
    source, copy = tmp_path / "source.ipynb", tmp_path / "copy.ipynb"
    nb = _notebook("x = 1")
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="1\n")]
    nb.cells.insert(
        0, new_markdown_cell("> executed copy", metadata={"tags": [executed.HEADER_TAG]})
    )
    nbformat.write(nb, copy)
    nbformat.write(_notebook("x = 1"), source)
    edited = nbformat.read(source, as_version=4)
    edited.cells[0].source = "# A lesson, reworded"
    nbformat.write(edited, source)
    assert executed.sync_prose(source, copy)
    synced = nbformat.read(copy, as_version=4)
    assert synced.cells[0].source == "> executed copy"
    assert synced.cells[1].source == "# A lesson, reworded"
    assert synced.cells[2].outputs[0].text == "1\n"  # the outputs stay
    edited.cells[1].source = "x = 2"
    nbformat.write(edited, source)
    assert not executed.sync_prose(source, copy)
