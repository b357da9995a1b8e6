"""The course's command line, run from the repository's root: `python -m tools run [NB ...]`
executes notebooks headless (`make run`); `index` writes the Colab badges, the set-up cells and the
README's notebook table; `fetch` downloads and converts the cpu profile's model once (`make
install`); `executed` writes the executed copies for reading (`make executed`, tools/executed.py).
Tooling around the course, not part of tutorlib, which is what the notebooks import."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from tools import executed
from tutorlib import paths

INDEX_START, INDEX_END = "<!-- notebook-index:start -->", "<!-- notebook-index:end -->"
_INDEX_RE = re.compile(f"{INDEX_START}.*?{INDEX_END}", re.DOTALL)
_TABLE_HEAD = (
    "| # | notebook | GPU under `full` | time under `full` | run under `cpu` (2 cores) | open |\n"
    "|---|---|---|---|---|---|"
)
_BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
_BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
_REPO_LINE_RE = re.compile(r'^REPO = "[^"]*"', re.MULTILINE)
SETUP_CELL = """\
# Set-up, written by `python -m tools index`: in Colab, fetch the course and install tutorlib.
import os
import subprocess
import sys

REPO = "{repo}"
if "google.colab" in sys.modules:  # elsewhere this cell does nothing (`make` installed tutorlib)
    DIR, env = "/content/course", {{**os.environ, "GIT_TERMINAL_PROMPT": "0"}}  # no password prompt
    clone = ["git", "clone", "-q", "--depth", "1", REPO, DIR]
    cloned = os.path.isdir(DIR) or subprocess.run(clone, env=env, capture_output=True, text=True)
    if cloned is not True and cloned.returncode:
        print(cloned.stdout + cloned.stderr)
        raise RuntimeError(f"set-up failed: `{{' '.join(clone)}}` (output above). Is {{REPO}} right?")
    setup = {{"__name__": "__main__", "DIR": DIR, "env": env}}
    exec(open(f"{{DIR}}/colab_setup.py").read(), setup)  # installs tutorlib, keeps Colab's torch\
"""  # noqa: E501 - verbatim in every notebook, where {{ }} render as { } and it fits


def course_notebooks() -> list[Path]:
    """The numbered notebooks (`NN_topic.ipynb`) in course order."""
    return sorted((paths.root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def repository_url(explicit: str | None = None) -> str:
    """`--repo`, else `TUTORLIB_REPO`, else `[tool.tutorlib] repository` in pyproject.toml."""
    pyproject = tomllib.loads((paths.root() / "pyproject.toml").read_text("utf-8"))
    ours = pyproject.get("tool", {}).get("tutorlib", {})
    if not (url := explicit or os.environ.get("TUTORLIB_REPO") or ours.get("repository")):
        raise ValueError(
            "no repository URL: pass --repo, set TUTORLIB_REPO or [tool.tutorlib] repository"
        )
    return url.rstrip("/")


class _Progress(NotebookClient):
    """Runs a notebook and says where it is: each code cell as it starts, and what the cell
    prints, as it prints it (trl's progress bars stay in the executed copy)."""

    def on_cell_start(self, cell: Any, cell_index: int) -> None:  # type: ignore[override]
        self.at = cell_index
        code = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]
        if cell_index not in code:
            return
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        print(f"  cell {code.index(cell_index) + 1}/{len(code)}: {first[:70]}", flush=True)

    def output(self, outs: list, msg: dict, display_id: str, cell_index: int) -> Any:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            for line in msg["content"]["text"].splitlines():
                print(f"    {line[:120]}", flush=True)
        return super().output(outs, msg, display_id, cell_index)


def _notebooks(names: list[str]) -> list[Path]:
    """Notebook paths from paths or two-digit numbers ("03"); all of them when none are given."""
    if not names:
        return course_notebooks()
    numbered = {p.name[:2]: p for p in course_notebooks()}
    chosen = [numbered.get(n, Path(n).resolve()) for n in names]
    if missing := [str(p) for p in chosen if not p.is_file()]:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    return chosen


def _run(args: argparse.Namespace) -> int:
    from tutorlib import profile, results  # deferred: they import torch

    notebooks = _notebooks(args.notebooks)
    prof, out = profile.detect(), paths.runs_dir()  # each kernel's detect() makes the same choice
    print(f"{prof.card()}\nexecuting {len(notebooks)} notebook(s); executed copies go to {out}")
    out.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(notebooks, 1):
        print(f"[{n}/{len(notebooks)}] {path.name}", flush=True)
        nb = nbformat.read(path, as_version=4)  # run in its own folder, with no time limit
        client = _Progress(
            nb, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        try:
            client.execute()
        except Exception as err:
            # a cell raised or killed the kernel: name it; the copy has the traceback
            number = sum(c.cell_type == "code" for c in nb.cells[: getattr(client, "at", 0) + 1])
            what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
            failed = f"FAILED: {path.name}, code cell {number}: {what} ({out / path.name})"
            raise SystemExit(failed) from None
        finally:
            nbformat.write(nb, out / path.name)
    try:
        table = results.summary_table(prof.name)
    except Exception as err:  # the notebooks ran: say why the table is missing, do not fail
        why = f"summary_table raised {type(err).__name__}: {err}"
        print(f"\nno results table: {why}", file=sys.stderr)
        return 0
    shown = table.to_string(index=False) if len(table) else "none"
    print(f"\nRecorded results ({prof.name}):\n{shown}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from tutorlib import tiny  # deferred: it imports torch

    print(f"the cpu profile's model is in {tiny.smollm2()}")
    return 0


def _index(args: argparse.Namespace) -> int:
    repo, readme, rows = repository_url(args.repo), paths.root() / "README.md", [_TABLE_HEAD]
    if not _INDEX_RE.search(text := readme.read_text(encoding="utf-8")):
        raise SystemExit(
            f"{readme} has no {INDEX_START} ... {INDEX_END} block for the notebook table"
        )
    colab = "https://colab.research.google.com/github/" + repo.split("github.com/")[-1]
    index_file = executed.executed_dir() / "index.json"
    index = json.loads(index_file.read_text("utf-8")) if index_file.is_file() else {}
    for path in course_notebooks():
        nb, url = nbformat.read(path, as_version=4), f"{colab}/blob/main/notebooks/{path.name}"
        badge = f"[![Open In Colab]({_BADGE_SVG})]({url})"
        for cell in (c for c in nb.cells if c.cell_type == "markdown"):
            cell.source = _BADGE_RE.sub(lambda _, badge=badge: badge, cell.source)
        code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
        if code == len(nb.cells) or "google.colab" not in nb.cells[code].source:
            # no set-up cell yet: never overwrite a lesson's cell
            nb.cells.insert(code, new_code_cell())
        nb.cells[code].source = SETUP_CELL.format(repo=repo)
        nbformat.write(nb, path)
        title, m = re.search(r"^# (.+)$", nb.cells[0].source, re.M), nb.metadata.get("tutorlib", {})
        head = (
            f"{path.name[:2]} | [{title[1].strip() if title else path.stem}](notebooks/{path.name})"
        )
        gpu = f"{m.get('gpu', '?')} | {m.get('time_full', '?')}"
        rows.append(f"| {head} | {gpu} | {_executed_link(path.name, index)} | {badge} |")
    block = "\n".join([INDEX_START, *rows, INDEX_END])
    readme.write_text(_INDEX_RE.sub(lambda _: block, text), encoding="utf-8")
    listed = len(rows) - 1
    print(f"badges, set-up cells and the README table of {listed} notebook(s) now point at {repo}")
    return 0


def _executed_link(name: str, index: dict) -> str:
    """The README's link to a notebook's executed copy, with its minutes and peak memory."""
    if name not in index:
        return "not yet (`make executed`)"
    measured = index[name]
    peak = f"{measured['peak_rss_mb'] / 1024:.1f} GB"
    return f"[executed copy](executed/{name}): {measured['minutes']} min, peak {peak}"


def _executed(args: argparse.Namespace) -> int:
    if not args.prose:
        executed.write(_notebooks(args.notebooks), series=not args.notebooks)
        return _index(argparse.Namespace(repo=None))
    for path in _notebooks(args.notebooks):
        copy = executed.executed_dir() / path.name
        if copy.is_file() and executed.sync_prose(path, copy):
            print(f"{path.name}: prose updated")
        else:  # no copy, changed code, or cells added or removed
            why = "; ".join(executed.differences(path, copy)) or f"{path.name}: cells differ"
            print(f"{why}: run it again")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks headless (default: all, in order)")
    run.add_argument("notebooks", nargs="*", help="notebook paths or numbers (03); default: all")
    index = sub.add_parser("index", help="write Colab badges, set-up cells, README table")
    index.add_argument("--repo")
    sub.add_parser("fetch", help="download and convert the cpu profile's model once")
    done = sub.add_parser("executed", help="run under cpu, write executed copies to executed/")
    done.add_argument("notebooks", nargs="*", help="notebook paths or numbers; default: all")
    done.add_argument("--prose", action="store_true", help="only copy the sources' prose over")
    args = parser.parse_args(argv)
    commands = {"run": _run, "index": _index, "fetch": _fetch, "executed": _executed}
    return commands[args.command](args)
