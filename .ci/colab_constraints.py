"""Colab's preinstalled versions as pip constraints, and checks that an install left them alone.

  write FREEZE OUT [RELEASED...]     constraints from Colab's `pip freeze`, less the RELEASED names
  report FREEZE JSON [RELEASED...]   what `pip install --dry-run --report JSON` would add or change
  compare FREEZE [RELEASED...]       this interpreter's packages against Colab's
  stand-in FREEZE                    register Colab's torch version as installed (no code, no CUDA)
  versions                           the versions of the libraries the course is built on

Left out of the constraints: torch and its companions (the check brings a CPU build), every CUDA
package (nvidia-*, cuda-*, triton, *-cu12, *cuda*, +cu builds), pip/setuptools/wheel, and direct
URLs, which pip does not take as constraints; local version suffixes are dropped from the rest. A
RELEASED package may change (the check names it); any other change of a Colab package fails, and a
change to one in HELD can never be released.
"""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the set-up cell's list: what a notebook must never replace in Colab
from colab_setup import KEEP  # noqa: E402

HELD = set(KEEP)
LIBRARIES = """torch transformers trl peft accelerate datasets bitsandbytes openai huggingface-hub
    tokenizers pyarrow numpy pandas ipykernel ipython ipywidgets jupyter-client tornado nbclient
    nbformat nbmake""".split()
_TORCH = {"torch", "torchvision", "torchaudio", "torchcodec"}
# the venv's own; torch 2.13 needs a newer setuptools than Colab's
_TOOLS = {"pip", "setuptools", "wheel"}
_CUDA = re.compile(r"^(nvidia-|cuda-|triton$)|cuda|-cu\d+$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _base(version: str) -> str:
    return version.split("+")[0]


def colab_versions(freeze: Path) -> dict[str, str]:
    """{normalised name: version as written} for every `name==version` line of a pip freeze."""
    out = {}
    for line in freeze.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            out[_norm(name)] = version.strip()
    return out


def _constrained(name: str, version: str) -> bool:
    return name not in _TORCH | _TOOLS and not _CUDA.search(name) and "+cu" not in version


def _released(names: list[str]) -> set[str]:
    released = {_norm(n) for n in names}
    held = sorted(released & HELD)
    if held:
        sys.exit(f"colab: {held} may never be released: Colab's runtime depends on them")
    return released


def write(freeze: str, out: str, *released: str) -> int:
    versions, free = colab_versions(Path(freeze)), _released(list(released))
    kept = {n: _base(v) for n, v in versions.items() if _constrained(n, v) and n not in free}
    Path(out).write_text(
        f"# Colab's versions, from {freeze} by .ci/colab_constraints.py; do not edit.\n"
        + "".join(f"{n}=={v}\n" for n, v in sorted(kept.items()))
    )
    print(
        f"colab: {len(kept)} of Colab's {len(versions)} pinned packages held as constraints "
        f"in {out}{'; released: ' + ', '.join(sorted(free)) if free else ''}"
    )
    return 0


def _verdict(changed: list[str], free: set[str]) -> int:
    """Changes to RELEASED packages are expected; any other change of a Colab package fails."""
    bad = [c for c in changed if c.split()[0] not in free]
    for line in changed:
        print(f"colab:   changed {line}{'' if line.split()[0] in free else '   <-- NOT ALLOWED'}")
    held = [c for c in changed if c.split()[0] in HELD]
    if held:
        print(f"colab: FAIL: would replace what Colab's runtime depends on: {', '.join(held)}")
    elif bad:
        print(f"colab: FAIL: changed Colab packages outside the released set: {', '.join(bad)}")
    return 1 if bad else 0


def report(freeze: str, report_json: str, *released: str) -> int:
    """Sort a dry run's installs into: new to Colab, at Colab's own version, changed from Colab."""
    colab, free = colab_versions(Path(freeze)), _released(list(released))
    new, same, changed = [], 0, []
    for item in json.loads(Path(report_json).read_text())["install"]:
        name, version = _norm(item["metadata"]["name"]), item["metadata"]["version"]
        if name == "tutorlib" or name in _TOOLS:
            continue
        if name not in colab:
            new.append(f"{name}=={version}")
        elif _base(colab[name]) == _base(version):
            same += 1
        else:
            changed.append(f"{name} {colab[name]} -> {version}")
    print(
        f"colab: dry run resolves: {same} at Colab's version, {len(new)} new, "
        f"{len(changed)} changed"
    )
    print(f"colab:   new: {', '.join(sorted(new)) or '-'}")
    return _verdict(changed, free)


def compare(freeze: str, *released: str) -> int:
    """Every installed package that Colab also has must carry Colab's version, torch aside."""
    colab, free = colab_versions(Path(freeze)), _released(list(released))
    changed = []
    for dist in metadata.distributions():
        name, version = _norm(dist.metadata["Name"]), dist.version
        if (
            name in colab
            and _constrained(name, colab[name])
            and _base(colab[name]) != _base(version)
        ):
            changed.append(f"{name} {colab[name]} -> {version}")
        elif name in _TORCH and name in colab and _base(colab[name]) != _base(version):
            print(
                f"colab:   {name} {version} here stands in for Colab's {colab[name]} (not compared)"
            )
    print(f"colab: installed: {len(changed)} package(s) differ from Colab's")
    return _verdict(sorted(changed), free)


def stand_in(freeze: str) -> int:
    """Colab's torch as pip sees it there: installed, its own dependencies met. Metadata only."""
    version = _base(colab_versions(Path(freeze))["torch"])
    info = Path(sysconfig.get_paths()["purelib"]) / f"torch-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n"
        "Summary: stand-in for Colab's preinstalled torch (metadata only)\n"
    )
    (info / "INSTALLER").write_text("colab-check\n")
    (info / "RECORD").write_text("")
    print(f"colab: stand-in torch {version} registered in {info.parent} (cannot be imported)")
    return 0


def versions() -> int:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    print("colab: versions: " + ", ".join(found))
    return 0


if __name__ == "__main__":
    commands = dict(
        write=write, report=report, compare=compare, versions=versions, **{"stand-in": stand_in}
    )
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    sys.exit(commands[sys.argv[1]](*sys.argv[2:]))
