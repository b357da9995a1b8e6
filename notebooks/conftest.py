"""nbmake runs every notebook as Colab does: alone, on a fresh machine. So each notebook gets empty
results and runs folders of its own, and one that needs another notebook's records fails here."""

import os
import shutil
import tempfile

_VARIABLES = ("TUTORLIB_RESULTS", "TUTORLIB_RUNS")
_saved: dict[str, str | None] = {}


def pytest_runtest_setup(item):
    if item.path.suffix == ".ipynb":  # the kernel that nbmake starts inherits this environment
        _saved.update({name: os.environ.get(name) for name in _VARIABLES})
        _saved["fresh"] = tempfile.mkdtemp(prefix=f"notebook{item.path.name[:2]}-")
        for name in _VARIABLES:
            os.environ[name] = os.path.join(_saved["fresh"], name.removeprefix("TUTORLIB_").lower())


def pytest_runtest_teardown(item):
    if fresh := _saved.pop("fresh", None):
        shutil.rmtree(fresh, ignore_errors=True)
        for name in _VARIABLES:
            if (value := _saved.pop(name)) is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
