# The two commands a new user needs; each sets itself up on a fresh machine.
#   make serve   serve the bundled breast-cancer model on gRPC :8001 and HTTP :8002
#   make test    install everything the tests need, then lint, type-check and run the test suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint typecheck protos clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps record which dependency set is installed; they are redone when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.runtime

serve: $(VENV)/.runtime
	$(BIN)/vigil serve

# Debian packages the tests drive as real components (none yet beyond the Python environment).
system-deps:
	@true

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: lint

test: $(VENV)/.dev system-deps lint
	$(BIN)/pytest

protos: $(VENV)/.dev
	$(BIN)/python -m protos.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
