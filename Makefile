# Two commands for a learner: `make run` executes the course, `make test` checks it.
# Each one creates .venv on first use (torch first, so pip never pulls a CUDA build as a dependency
# of something else), installs tutorlib in editable mode, and is quick once the venv exists.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tutorlib-installed
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# Notebooks to run (default: all, in order). Example: make run NOTEBOOKS=notebooks/00_start_here.ipynb
NOTEBOOKS ?=

.PHONY: run test lint lab install constraints clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing $(TORCH) first, then tutorlib[dev,notebooks] (editable) into $(VENV) ..."
	@$(PIP) install "$(TORCH)"
	@$(PIP) install -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m tutorlib run $(NOTEBOOKS)

# Unit tests, then every notebook executed by nbmake under the smoke profile, with the hub offline.
test: $(STAMP)
	$(BIN)/ruff check tutorlib tests benchmarks notebooks
	TUTORLIB_PROFILE=smoke HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=600 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check tutorlib tests benchmarks notebooks
	$(BIN)/ruff format --check tutorlib tests benchmarks

lab: $(STAMP)
	$(PIP) install -c constraints.txt -e ".[dev,notebooks]"
	$(BIN)/jupyter lab notebooks/

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt

clean:
	rm -rf runs results/smoke .pytest_cache
