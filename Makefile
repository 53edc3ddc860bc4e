# Active-learning data selection -- `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install first. The default pair installs from this machine's
# local files; elsewhere pick the build for your platform, e.g.
#   make install TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast bench report clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv and install the project (once; again when pyproject.toml changes)

run: install ## run the default experiment (embedded digits, CPU); extra overrides: make run ARGS="scorer=margin"
	$(PY) -m src.run $(ARGS)

test: install ## run the test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install ## unit tests only, no end-to-end CLI runs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install ## speed and memory benchmarks (ARGS=--quick for a smoke run); figures to stdout and bench-results/
	$(PY) -m benchmarks.bench $(ARGS)
	$(PY) -m benchmarks.bench_data $(ARGS)
	$(PY) -m benchmarks.bench_detection $(ARGS)
	$(PY) -m benchmarks.bench_selection $(ARGS)

report: install ## report of runs/sweeps: make report DIRS="multirun/<date>_<time>" [ARGS="--facet dataset.name"]
	@test -n "$(DIRS)" || { echo 'usage: make report DIRS="multirun/<date>_<time> ..." [ARGS=...]'; exit 2; }
	$(PY) -m src.report $(DIRS) $(ARGS)

clean: ## remove outputs/ and multirun/ results (not the venv)
	rm -rf outputs multirun/*/ bench-results
