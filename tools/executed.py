"""`python -m tools executed [NN ...]` (`make executed`): the course run under the cpu profile, in
order, with results and runs folders of its own (runs/executed/, emptied first when the whole
series runs), as on a fresh machine, and each notebook's executed copy written to executed/ for
reading on GitHub. A copy starts with a cell saying how it was made (profile, models, device,
libraries, date, minutes, peak memory) and carries the outputs without what changes from run to run
for no reason: progress bars, absolute paths. executed/index.json keeps each run's minutes and peak
memory, which the README's notebook table shows."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
from nbformat.v4 import new_markdown_cell

from tutorlib import paths

HEADER_TAG = "executed-copy-header"
_PROGRESS = re.compile(r"\r|it/s\]|s/it\]")  # tqdm bars: redrawn with \r, timed
_KERNEL_FILE = re.compile(r"/tmp/ipykernel_\d+/\d+\.py")  # where a warning's cell ran


def executed_dir() -> Path:
    return paths.root() / "executed"


def code_of(nb: Any) -> list[str]:
    """The code cells' sources, the part of a notebook an executed copy must share with it."""
    return [c.source for c in nb.cells if c.cell_type == "code"]


def differences(source: Path, copy: Path) -> list[str]:
    """Why `copy` is not an executed copy of `source` (empty when it is): code cell by code cell."""
    if not copy.is_file():
        return [f"{copy.name}: no executed copy"]
    ours, theirs = (code_of(nbformat.read(p, as_version=4)) for p in (source, copy))
    if len(ours) != len(theirs):
        return [f"{copy.name}: {len(theirs)} code cells, the source has {len(ours)}"]
    changed = [i + 1 for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    return [f"{copy.name}: code cell {i} differs from the source" for i in changed]


def sync_prose(source: Path, copy: Path) -> bool:
    """Give an executed copy its source's current prose, which needs no rerun: only when the code
    is unchanged and the cells line up one for one. True when the copy was rewritten."""
    nb, done = nbformat.read(source, as_version=4), nbformat.read(copy, as_version=4)
    cells = done.cells[1:]  # after the header cell
    kinds = [c.cell_type for c in nb.cells]
    if code_of(nb) != code_of(done) or kinds != [c.cell_type for c in cells]:
        return False
    for ours, theirs in zip(nb.cells, cells, strict=True):
        if ours.cell_type == "markdown":
            theirs.source = ours.source
    nbformat.write(done, copy)
    return True


def _peak_rss(process: subprocess.Popen, interval_s: float = 0.2) -> float:
    """Wait for `process`, sampling the resident memory of it and its children; peak in MB."""
    parent, peak = psutil.Process(process.pid), 0.0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree) / 2**20)
        except psutil.NoSuchProcess:
            pass
        time.sleep(interval_s)
    return peak


def _clean(nb: Any, replacements: dict[str, str]) -> None:
    """Drop progress bars and widget state; write paths relative to the repository or home."""
    nb.metadata.pop("widgets", None)
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        outputs = [o for o in cell.outputs if not _is_progress(o)]
        for output in outputs:
            if "text" in output:
                output.text = _replace(output.text, replacements)
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in output.get("data", {}):
                    output.data[kind] = _replace(output.data[kind], replacements)
        cell.outputs, cell.metadata = outputs, {}


def _is_progress(output: Any) -> bool:
    if output.get("output_type") == "stream":
        return output.get("name") == "stderr" and bool(_PROGRESS.search(output.text))
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


def _replace(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        text = text.replace(old, new)
    return _KERNEL_FILE.sub("<cell>", text)


def _header(name: str, measured: dict[str, Any]) -> Any:
    versions = ", ".join(f"{k} {v}" for k, v in measured["library_versions"].items())
    text = (
        f"> **An executed copy, for reading.** `make executed` ran the source notebook, "
        f"[notebooks/{name}](../notebooks/{name}), on {measured['date']} under the **`cpu`** "
        f"profile: SmolLM2-135M-Instruct plays the documents' decoder models (DistilGPT2, "
        f"Llama-2-7B, Falcon-7B, Phi-2) and a random 2-layer stand-in plays FLAN-T5, on the "
        f"course's small bundled data, on {measured['device']}. It took {measured['minutes']} "
        f"minutes, with a peak of {measured['peak_rss_mb']:,} MB of resident memory. Its numbers "
        f"are this profile's, not the documents'. Libraries: {versions}. To run it yourself, "
        f"open the source in Colab or run `make run NB={name[:2]}`."
    )
    return new_markdown_cell(text, metadata={"tags": [HEADER_TAG]})


def _execute(path: Path, folder: Path) -> dict[str, Any]:
    """Run one notebook under cpu with `folder` holding results and runs; measure it."""
    environment = os.environ | {"TUTORLIB_PROFILE": "cpu", "HF_HUB_OFFLINE": "1"}
    environment |= {"TUTORLIB_RESULTS": str(folder / "results"), "TUTORLIB_RUNS": str(folder)}
    start = time.perf_counter()
    command = [sys.executable, "-m", "tools", "run", str(path)]
    process = subprocess.Popen(command, cwd=paths.root(), env=environment)
    peak = _peak_rss(process)
    minutes = round((time.perf_counter() - start) / 60, 1)
    return {"ok": process.returncode == 0, "minutes": minutes, "peak_rss_mb": round(peak)}


def write(notebooks: list[Path], *, series: bool) -> None:
    """Execute `notebooks` in order under cpu and write their copies and executed/index.json.
    `series` (the whole course) starts from empty results and runs folders; a rerun of some
    notebooks keeps the records the others left there, which later notebooks' tables read."""
    from tutorlib import env  # deferred: it imports torch

    out, folder = executed_dir(), paths.runs_dir() / "executed"
    if series:
        shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    index_file = out / "index.json"
    index = json.loads(index_file.read_text("utf-8")) if index_file.is_file() else {}
    device = f"a {os.cpu_count()}-core {platform.machine()} CPU (no GPU)"
    replacements = {str(folder / "results"): "results", str(folder): "runs"}
    replacements |= {str(paths.root()): ".", str(Path.home()): "~"}
    failed = []
    for path in notebooks:
        measured = _execute(path, folder) | {"device": device}
        if not measured["ok"]:  # its copy, with the traceback, stays in the folder
            failed.append(path.name)
            continue
        measured |= {"date": time.strftime("%Y-%m-%d")}
        measured["library_versions"] = env.library_versions()
        nb = nbformat.read(folder / path.name, as_version=4)
        _clean(nb, replacements)
        nb.cells.insert(0, _header(path.name, measured))
        nbformat.write(nb, out / path.name)
        index[path.name] = {k: measured[k] for k in ("minutes", "peak_rss_mb", "date")}
        index_file.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", "utf-8")
        print(f"{path.name}: {measured['minutes']} min, peak {measured['peak_rss_mb']} MB")
    if failed:
        raise SystemExit(f"failed under cpu: {', '.join(failed)} (their copies are in {folder})")
