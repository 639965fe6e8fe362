# Two commands on a fresh machine:  make demo  (the main job)   make test  (the test suite)
# Each creates .venv and installs what it needs. torch is pinned: its CPU build lies in /opt/wheels here;
# an unpinned torch would pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := $(if $(WHEELS),--find-links $(WHEELS),)

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FLAGS) "torch==2.13.0"
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FLAGS) -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/adntn demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
