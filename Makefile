# Two commands for a learner: `make run` executes the course, `make test` checks it.
# Each one creates .venv on first use (torch first, so pip never pulls a CUDA build as a dependency
# of something else), installs tutorlib in editable mode, and is quick once the venv exists.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tutorlib-installed
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# Notebooks to run (default: all, in order), by number or path. Example: make run NB=03
NB ?=

.PHONY: run executed test learning-check lint lab install constraints clean colab-check drift-check full-check

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing $(TORCH) first, then tutorlib[dev] (editable) into $(VENV) ..."
	@$(PIP) install "$(TORCH)"
	@$(PIP) install -c constraints.txt -e ".[dev]"
	@$(BIN)/python -m tools fetch  # the cpu profile's model, once: later runs are offline
	@touch $(STAMP)

install: $(STAMP)

# Without a GPU the notebooks run under the cpu profile (SmolLM2 on the bundled data, minutes each);
# TUTORLIB_PROFILE=smoke or full chooses another.
run: $(STAMP)
	$(BIN)/python -m tools run $(NB)

# The executed copies a reader sees on GitHub: every notebook (or NB=03 ...) run in order under the
# cpu profile, written with its outputs to executed/; the README's table links them (about an hour).
executed: $(STAMP)
	$(BIN)/python -m tools executed $(NB)

# Unit tests, then every notebook executed by nbmake under the smoke profile, with the hub offline.
# JOBS test files run at once (pytest-xdist, a whole file per worker, in order within it). Each smoke
# notebook keeps one core busy, so 2 nearly halves the time on a 2-core machine; JOBS=1 runs serially.
JOBS ?= 2

test: lint
	.ci/smoke-tests $(BIN)/python -n $(JOBS) --dist loadfile

# Proof that fine-tuning learns: under the cpu profile, SmolLM2 fine-tuned with LoRA through the
# notebooks' own path must beat its base on ROUGE-L over 40 bundled test dialogues (minutes).
# .ci/run runs it offline (the model was fetched into the cache by make install);
# TUTORLIB_MAX_STEPS=2 make learning-check must fail.
learning-check: $(STAMP)
	TUTORLIB_CACHE="$$($(BIN)/python -c 'from tutorlib import paths; print(paths.cache_dir())')" \
	  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(BIN)/python -m pytest tests/learning_check.py -p no:cacheprovider -q -s

# ruff's lint rules and its formatting, over every Python file and notebook of the project.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lab: $(STAMP)
	$(PIP) install -c constraints.txt -e ".[dev,notebooks]"
	$(BIN)/jupyter lab notebooks/

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt

# Colab's current image (.ci/colab, a dated copy of Colab's record): on Python 3.13, does the course
# install with Colab's versions held, changing only what the code needs newer, and leaving Colab's
# kernel stack, numpy, pandas and torch alone? Then the unit tests and smoke notebooks with those
# versions. Own venvs; needs the index.
colab-check:
	TORCH="$(TORCH)" bash .ci/colab-check

# The newest releases of transformers, trl, peft, accelerate, datasets, bitsandbytes and openai (torch
# stays $(TORCH)), then the unit tests and smoke notebooks: a breaking release shows here first.
drift-check:
	TORCH="$(TORCH)" bash .ci/drift-check

# Notebooks 01-03 under the `full` profile on this CPU, offline, against a temporary hub cache that
# tests/full_hub.py builds (the real hub ids and dataset formats; Llama-2-7B with 2 of its 32 layers,
# random weights). Slow (minutes), so not part of `make test`; .ci/full-check says what it covers.
full-check: $(STAMP)
	bash .ci/full-check

clean:
	rm -rf runs results/smoke .pytest_cache
