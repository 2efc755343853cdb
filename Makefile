# Quick start:  make demo  (install, then back up generated studies to a folder)
#               make test  (install what the tests need, then run them)
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test lint schema soak wheel-check docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/reconciler demo

# The tests talk to real DCMTK and Orthanc peers: installed from Debian when missing.
test: $(VENV)/.installed-test
	.ci/install-peers
	$(BIN)/ruff check reconciler tests
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	VENV=$(VENV) .ci/wheel-check
	$(MAKE) docs

# The built wheel, installed in a clean venv, runs the demo and finds its shipped presets.
wheel-check: $(VENV)/.installed
	VENV=$(VENV) .ci/wheel-check

# The documentation site (docs/, mkdocs.yml), built strict: a broken link or anchor fails it.
docs: | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[docs]'
	$(BIN)/mkdocs build --strict -d $(VENV)/site

lint: $(VENV)/.installed-test
	$(BIN)/ruff check reconciler tests
	$(BIN)/ruff format --check reconciler tests
	$(BIN)/lint-imports
	$(BIN)/mypy

schema: $(VENV)/.installed
	$(BIN)/reconciler schema > schemas/config.schema.json

# Crash safety, long mode: SOAK applies killed by SIGKILL, each re-run to convergence and checked.
SOAK ?= 200
soak: $(VENV)/.installed-test
	.ci/install-peers
	RECONCILER_SOAK=$(SOAK) $(BIN)/python -m pytest -q -s tests/test_crash_safety.py -k soak
