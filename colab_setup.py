"""Run by each notebook's set-up cell in Colab once the course is cloned into DIR: install tutorlib
without replacing what Colab's runtime depends on, and stop with a clear message when the runtime
has to restart. The cell runs it with `exec` in its own interpreter, so `sys.modules` is the
notebook's. `.ci/colab_constraints.py` imports KEEP from here: one list of what Colab must keep."""

import subprocess
import sys
from importlib import metadata

# Colab's kernel, arrays and CUDA build of torch: pip may install around them, never replace them.
KEEP = """ipykernel ipython ipywidgets jupyter-client tornado traitlets notebook
    numpy pandas torch""".split()


def installed() -> dict[str, str]:
    return {
        d.metadata["Name"].lower().replace("_", "-"): d.version for d in metadata.distributions()
    }


def install(folder: str, env: dict | None = None) -> None:
    before = installed()
    with open("/tmp/colab-kept.txt", "w") as pins:  # constraints: the versions Colab has now
        pins.writelines(f"{name}=={before[name]}\n" for name in KEEP if name in before)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/colab-kept.txt", "-e", folder]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        print(done.stdout + done.stderr)
        raise RuntimeError(
            f"set-up failed: `{' '.join(cmd)}` (output above). "
            f"To start afresh, delete {folder} and run the cell again."
        )
    sys.path.insert(0, folder)
    changed = {
        name: f"{before.get(name, 'new')} -> {v}"
        for name, v in installed().items()
        if before.get(name) != v
    }
    print(
        "set-up: installed or upgraded:",
        ", ".join(f"{n} {c}" for n, c in changed.items()) or "nothing",
    )
    # imported already: their old code is in memory
    stale = [n for n in changed if n.replace("-", "_") in sys.modules]
    if stale:
        raise RuntimeError(
            f"Restart needed: {', '.join(stale)} were imported before the upgrade. "
            "Runtime > Restart session, then Run all again (this cell then installs nothing new)."
        )


if __name__ == "__main__":  # the set-up cell passes DIR and env
    install(globals()["DIR"], globals().get("env"))
