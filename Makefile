# Active-learning data selection -- `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install first. The default pair installs from this machine's
# local files; elsewhere pick the build for your platform, e.g.
#   make install TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2
# Label Studio (the labelling round trip) pins versions that conflict with the
# project's, so it gets a virtual environment of its own; the tests find it there.
LABEL_STUDIO_VENV ?= .venv-labelstudio
LABEL_STUDIO_SPEC ?= label-studio==1.23.2

.DEFAULT_GOAL := help
.PHONY: help install run lint test test-fast test-labelstudio labelstudio-env bench report clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-17s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	# baal, the tests' independent reference for BALD / BatchBALD: without its declared jupyter
	# dependency, which its heuristics never import
	$(PY) -m pip install --quiet --no-deps "baal>=2.1,<3" "structlog>=22,<25"
	touch $@

install: $(VENV)/.installed ## create .venv and install the project (once; again when pyproject.toml changes)

run: install ## run the default experiment (embedded digits, CPU); extra overrides: make run ARGS="scorer=margin"
	$(PY) -m src.run $(ARGS)

lint: install ## ruff: lint and format check (settings in pyproject.toml; `ruff format .` fixes the format)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint ## lint, then the test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install ## unit tests only, no end-to-end CLI runs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

$(LABEL_STUDIO_VENV)/bin/label-studio:
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet $(LABEL_STUDIO_SPEC)

labelstudio-env: $(LABEL_STUDIO_VENV)/bin/label-studio ## Label Studio in a venv of its own (.venv-labelstudio, about 1 GB)

test-labelstudio: install labelstudio-env ## the Label Studio round trip against a real local server (minutes)
	LABEL_STUDIO_BIN=$(abspath $(LABEL_STUDIO_VENV))/bin/label-studio $(PY) -m pytest tests/test_labelstudio_server.py

bench: install ## speed and memory benchmarks (ARGS=--quick for a smoke run); figures to stdout and bench-results/
	$(PY) -m benchmarks.bench $(ARGS)
	$(PY) -m benchmarks.bench_data $(ARGS)
	$(PY) -m benchmarks.bench_detection $(ARGS)
	$(PY) -m benchmarks.bench_detection_data $(ARGS)
	$(PY) -m benchmarks.bench_detection_curve $(ARGS)
	$(PY) -m benchmarks.bench_parallel $(ARGS)
	$(PY) -m benchmarks.bench_fastpaths $(ARGS)
	$(PY) -m benchmarks.bench_startup $(ARGS)
	$(PY) -m benchmarks.bench_selection $(ARGS)

report: install ## report of runs/sweeps: make report DIRS="multirun/<date>_<time>" [ARGS="--facet dataset.name"]
	@test -n "$(DIRS)" || { echo 'usage: make report DIRS="multirun/<date>_<time> ..." [ARGS=...]'; exit 2; }
	$(PY) -m src.report $(DIRS) $(ARGS)

clean: ## remove outputs/ and multirun/ results (not the venv)
	rm -rf outputs multirun/*/ bench-results
