"""House rules of the course notebooks and of tutorlib's size (nbmake executes the notebooks themselves)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools.cli import _REPO_LINE_RE, course_notebooks, repository_url
from tutorlib import paths

NOTEBOOKS = course_notebooks()

# The calls a notebook teaches must be built in its own code cells, not hidden in tutorlib (issue 8).
TEACHES = {
    "01": ["SFTConfig(", "SFTTrainer(", "memory.track()", "trainer.train()"],
    "02": ["except torch.OutOfMemoryError", "memory.estimate(", "SFTConfig("],
    "03": [
        "LoraConfig(",
        "BitsAndBytesConfig(",
        "prepare_model_for_kbit_training(",
        "get_peft_model(",
        "peft_config=",
        "quantization_config=",
        "load_in_8bit=True",
    ],
    "04": [
        "Seq2SeqTrainingArguments(",
        "Seq2SeqTrainer(",
        "DataCollatorForSeq2Seq(",
        "text_target=",
        "LoraConfig(",
        "get_peft_model(",
        "PeftModel.from_pretrained(",
        "is_trainable=False",
        "memory.track()",
        "rouge_scorer.RougeScorer(",
    ],
    "05": [
        "BitsAndBytesConfig(",
        "quantization_config=",
        "isinstance(module, Linear4bit)",
        "LoraConfig(",
        "models.on_meta(",
        "prepare_model_for_kbit_training(",
        "get_peft_model(",
        "SFTConfig(",
        "SFTTrainer(",
        "repetition_penalty=30",
        'rubric="summary_quality"',
        "grading.messages(",
    ],
    "06": [
        "BitsAndBytesConfig(",
        "quantization_config=",
        "prepare_model_for_kbit_training(",
        "LoraConfig(",
        "get_peft_model(",
        "SFTConfig(",
        "SFTTrainer(",
        "plots.loss_curves(",
        "PeftModel.from_pretrained(",
        "merge_and_unload()",
    ],
    "07": [
        "class LoRALinear(",
        "LoraConfig(",
        "get_peft_model(",
        "torch.testing.assert_close(",
        "SFTTrainer(",
        "torch.linalg.svdvals(",
        "bnb.functional.quantize_4bit(",
        "bnb.optim.PagedAdamW32bit(",
    ],
    "08": [
        "SFTConfig(",
        "SFTTrainer(",
        'dataset_text_field="text"',
        "param.requires_grad = False",
        "LoraConfig(",
        "get_peft_model(",
        'load_dataset("json"',
        "def format_instruction(",
    ],
    "09": [
        "DPOConfig(",
        "DPOTrainer(",
        "ref_model=None",
        "peft_config=",
        "LoraConfig(",
        "SFTTrainer(",
        "disable_adapter()",
        "F.logsigmoid(",
    ],
    "10": [
        "memory.estimate(",
        "Accelerator(",
        "accelerator.prepare(",
        "accelerator.backward(",
        "accelerate.commands.launch",
        "--num_processes",
        "fsdp_config:",
        "zero_stage",
    ],
    "11": [
        "synthetic.resumable(",
        "chat.completions.create(",
        "response_format=",
        "synthetic.near_duplicates(",
        "openai_ft.check(",
        "openai_ft.submit(",
        "fine_tuning.jobs.retrieve(",
        "method=",
        'set_xscale("log"',
        "files.create(",
        "fine_tuning.jobs.create(",
    ],
}


def test_the_course_has_its_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{n:02d}" for n in range(12)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_conventions(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    code = [c for c in cells if c.cell_type == "code"]
    # Title with a Colab badge for this very notebook, then set-up, then the profile and its card.
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert f"/blob/main/notebooks/{path.name})" in cells[0].source
    assert _REPO_LINE_RE.search(code[0].source) and "google.colab" in code[0].source
    assert repository_url() in code[0].source
    assert "detect()" in code[1].source and "card()" in code[1].source
    # Committed without outputs; cells short enough to read; GPU need stated for the README index.
    assert all(not c.outputs and c.execution_count is None for c in code)
    long = [i for i, c in enumerate(code[1:], 2) if len(c.source.splitlines()) > 15]
    assert not long, f"code cells over 15 lines: {long}"
    assert {"gpu", "time_full"} <= set(nb.metadata.get("tutorlib", {}))


@pytest.mark.parametrize("number", sorted(TEACHES))
def test_notebook_builds_the_objects_it_teaches(number):
    path = next(p for p in NOTEBOOKS if p.name.startswith(number))
    code = "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
    )
    missing = [call for call in TEACHES[number] if call not in code]
    assert not missing, f"{path.name} no longer builds {missing} in a code cell"


def _tutorlib() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((paths.root() / "tutorlib").glob("*.py"))}


def _code(path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_tutorlib_is_formatted_and_stays_thin():
    """Measured on formatted code, so that density never pays: simplify, never compress."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    checked = subprocess.run(
        [ruff, "format", "--check", str(paths.root() / "tutorlib")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    sizes = {name: len(text.splitlines()) for name, text in _tutorlib().items()}
    assert sum(sizes.values()) <= 3400, f"tutorlib has {sum(sizes.values())} lines: {sizes}"
    assert not {n: s for n, s in sizes.items() if s > 400}, sizes
    long = [
        f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, text in _tutorlib().items()
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, f"functions over 60 lines: {long}"


def test_every_public_function_has_a_caller_outside_its_module():
    """A notebook, the command line (tools/), a benchmark, images/draw.py or another tutorlib
    module calls it; a helper only its own module uses is private (its name starts with _)."""
    root, modules = paths.root(), _tutorlib()
    outside = [c for p in NOTEBOOKS for c in _code(p)]
    scripts = [*root.glob("benchmarks/*.py"), *root.glob("tools/*.py"), root / "images/draw.py"]
    outside += [p.read_text() for p in scripts]
    unused = []
    for name, text in modules.items():
        others = "\n".join([*outside, *(t for n, t in modules.items() if n != name)])
        for node in ast.parse(text).body:
            public = isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
            if public and not re.search(rf"\b{node.name}\(", others):
                unused.append(f"{name}:{node.name}")
    assert not unused, f"public functions nothing outside their module calls: {unused}"


def _calls(source: str):
    """(dotted name, number of arguments) of every call in a code cell."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), len(node.args) + len(node.keywords)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_settings_come_from_a_plan_not_from_dicts_merged_by_hand(path):
    cells = _code(path)
    merged = [c for c in cells for old in ("train_args(", "document_settings(") if old in c]
    assert not merged, f"settings merged by hand: {merged}"
    # tutorlib calls take at most 6 arguments: more belongs in a plan or a record
    modules = {p.removesuffix(".py") for p in _tutorlib()} | {"lesson", "profile", "plan"}
    crowded = [
        (name, n)
        for cell in cells
        for name, n in _calls(cell)
        if n > 6 and name.split(".")[0] in modules
    ]
    assert not crowded, f"tutorlib calls with more than 6 arguments: {crowded}"
    wide = [line for cell in cells for line in cell.splitlines() if len(line) > 100]
    assert not wide, f"code lines over 100 characters: {wide}"


def test_the_road_map_in_00_lists_every_notebook():
    start = nbformat.read(NOTEBOOKS[0], as_version=4)
    text = "\n".join(c.source for c in start.cells if c.cell_type == "markdown")
    missing = [p.name for p in NOTEBOOKS[1:] if p.name not in text]
    assert not missing, f"00 does not link {missing}"


def test_readme_index_lists_every_notebook():
    readme = (paths.root() / "README.md").read_text()
    for path in NOTEBOOKS:
        assert re.search(rf"\(notebooks/{re.escape(path.name)}\)", readme), (
            f"{path.name} missing from README"
        )
