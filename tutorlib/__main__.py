"""Command line: `python -m tutorlib run [NOTEBOOK ...]` and `python -m tutorlib index [--repo URL]`.

`run` executes the course notebooks headless, in order, writes executed copies to `runs/`, and prints
the table of recorded results. It stops at the first failing cell and names the notebook and cell.
`index` rewrites the Open-in-Colab badges (README notebook table, each notebook's title cell and its
set-up cell's clone URL) from one repository URL, so a fork changes one setting.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nbformat

from tutorlib import paths

INDEX_START, INDEX_END = "<!-- notebook-index:start -->", "<!-- notebook-index:end -->"
_BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
_REPO_LINE_RE = re.compile(r'^REPO = "[^"]*"', re.MULTILINE)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def course_notebooks() -> list[Path]:
    """The numbered notebooks (`NN_topic.ipynb`) in course order."""
    return sorted((paths.root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@dataclass
class CellFailure(Exception):
    """A notebook cell raised: which notebook, which cell, and what it said."""

    notebook: str
    cell_index: int
    source_head: str
    error: str
    executed_copy: Path

    def __str__(self) -> str:
        return (
            f"{self.notebook} failed at code cell {self.cell_index} ({self.source_head!r}):\n  {self.error}\n"
            f"The executed copy with the full traceback is {self.executed_copy}"
        )


def execute(notebook: Path, out_dir: Path, *, timeout: int = 3600) -> float:
    """Execute one notebook in its own folder, save the executed copy in `out_dir`; return seconds taken."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from tqdm.auto import tqdm

    nb = nbformat.read(notebook, as_version=4)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    bar = tqdm(total=len(code_cells), desc=notebook.name, unit="cell", leave=True)
    current = {"index": -1}

    def on_start(cell, cell_index, **_):
        current["index"] = cell_index

    def on_done(cell, cell_index, **_):
        bar.update(1)

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
        on_cell_start=on_start,
        on_cell_executed=on_done,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / notebook.name
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        nbformat.write(nb, copy)
        idx = current["index"]
        head = nb.cells[idx].source.strip().splitlines()[0][:80] if idx >= 0 else ""
        last = [line for line in _ANSI_RE.sub("", str(err)).strip().splitlines() if line.strip()][-1:]
        number = code_cells.index(idx) + 1 if idx in code_cells else idx
        raise CellFailure(notebook.name, number, head, last[0] if last else "error", copy) from None
    finally:
        bar.close()
    nbformat.write(nb, copy)
    return time.perf_counter() - start


def _run(args: argparse.Namespace) -> int:
    notebooks = [Path(p).resolve() for p in args.notebooks] or course_notebooks()
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        print(f"no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    from tutorlib.profile import detect

    profile = detect()
    os.environ.setdefault("TUTORLIB_PROFILE", profile.name)  # kernels inherit the same choice
    out_dir = paths.runs_dir()
    print(profile.card())
    print(f"executing {len(notebooks)} notebook(s); executed copies go to {out_dir}")
    for n, nb in enumerate(notebooks, 1):
        print(f"[{n}/{len(notebooks)}] {nb.name}")
        try:
            seconds = execute(nb, out_dir, timeout=args.timeout)
        except CellFailure as failure:
            print(f"\nFAILED: {failure}", file=sys.stderr)
            return 1
        print(f"    done in {seconds:.0f} s")
    _print_results(profile.name)
    return 0


def _print_results(profile_name: str) -> None:
    try:
        from tutorlib import results
    except ImportError:  # pragma: no cover - results module is part of the package
        return
    table = results.summary_table(profile_name)
    if table is None or len(table) == 0:
        print(f"no results recorded under results/{profile_name}/")
        return
    print(f"\nRecorded results (results/{profile_name}/):")
    print(table.to_string(index=False))


def repository_url(explicit: str | None = None) -> str:
    """The course repository: `--repo`, else `TUTORLIB_REPO`, else `[tool.tutorlib] repository` in pyproject.toml."""
    if explicit:
        return explicit.rstrip("/")
    if os.environ.get("TUTORLIB_REPO"):
        return os.environ["TUTORLIB_REPO"].rstrip("/")
    with open(paths.root() / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["tutorlib"]["repository"].rstrip("/")


def colab_url(repo: str, notebook: Path, branch: str = "main") -> str:
    slug = repo.removeprefix("https://").removeprefix("github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook.name}"


def badge(repo: str, notebook: Path) -> str:
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(repo, notebook)})"
    )


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "(untitled)"


def _index(args: argparse.Namespace) -> int:
    repo = repository_url(args.repo)
    rows = [
        "| # | notebook | GPU under `full` | time under `full` | open |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path in course_notebooks():
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata.get("tutorlib", {})
        for cell in nb.cells:
            if cell.cell_type == "markdown" and _BADGE_RE.search(cell.source):
                cell.source = _BADGE_RE.sub(badge(repo, path), cell.source)
            if cell.cell_type == "code" and _REPO_LINE_RE.search(cell.source):
                cell.source = _REPO_LINE_RE.sub(f'REPO = "{repo}"', cell.source)
        nbformat.write(nb, path)
        rows.append(
            f"| {path.name[:2]} | [{_title(nb)}](notebooks/{path.name}) | {meta.get('gpu', '?')} "
            f"| {meta.get('time_full', '?')} | {badge(repo, path)} |"
        )
    readme = paths.root() / "README.md"
    text = readme.read_text()
    if INDEX_START not in text or INDEX_END not in text:
        print(f"README.md has no {INDEX_START} ... {INDEX_END} block", file=sys.stderr)
        return 2
    head, rest = text.split(INDEX_START, 1)
    _, tail = rest.split(INDEX_END, 1)
    readme.write_text(head + INDEX_START + "\n" + "\n".join(rows) + "\n" + INDEX_END + tail)
    print(f"badges and README index now point at {repo}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks headless (default: all, in order)")
    run.add_argument("notebooks", nargs="*", help="notebook paths (default: notebooks/NN_*.ipynb)")
    run.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    idx = sub.add_parser("index", help="rewrite Colab badges and the README notebook index")
    idx.add_argument("--repo", help="repository URL, e.g. https://github.com/you/your-fork")
    args = parser.parse_args(argv)
    return _run(args) if args.command == "run" else _index(args)


if __name__ == "__main__":
    sys.exit(main())
