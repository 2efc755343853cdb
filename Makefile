# Quick start:  make demo  (install, then back up generated studies to a folder)
#               make test  (install what the tests need, then run them)
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test lint schema

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

test: $(VENV)/.installed-test
	$(BIN)/ruff check reconciler tests
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check reconciler tests

schema: $(VENV)/.installed
	$(BIN)/reconciler schema > schemas/config.schema.json
