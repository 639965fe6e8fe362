# Two commands on a fresh machine:  make demo  (the main job)   make test  (the test suite)
# Each creates .venv and installs what it needs. torch is pinned: its CPU build lies in /opt/wheels here;
# an unpinned torch would pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := $(if $(WHEELS),--find-links $(WHEELS),)

.PHONY: demo test test-fast fuzz lint install clean
# Tests run on every core (pytest-xdist, work stealing); hypothesis is derandomized (the ci profile) unless --fuzz.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist worksteal

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FLAGS) "torch==2.13.0"
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FLAGS) -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/adntn demo

test: install  # every mark (qemu, opencl, nvcc run where their tools are; .ci/run installs them)
	$(PYTEST) --durations=25

test-fast: install  # the edit-test loop: no slow or hardware tests, few hypothesis examples
	HYPOTHESIS_PROFILE=dev $(PYTEST) -m "not slow and not qemu and not opencl and not nvcc and not gpu"

lint: install  # style (120 columns, import order, complexity <= 15), the package's layers, types of ir/passes/targets
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

fuzz: install  # random seeds, more examples: run it to look for new failures
	$(PYTEST) --fuzz tests/test_fuzz.py tests/backends tests/frontends

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
