# The two commands a new user needs; each sets itself up on a fresh machine.
#   make serve   serve the bundled breast-cancer model on gRPC :8001 and HTTP :8002
#   make test    install everything the tests need, then lint, type-check and run the test suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint typecheck protos clean system-deps bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps record which dependency set is installed; they are redone when pyproject.toml changes.
# The editable install maps the folders onto `vigil` through an import hook, for which setuptools prints a generic
# caution about folders named like the package; nothing here is so named, so it is silenced.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(EDITABLE) .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(EDITABLE) ".[dev]"
	touch $@ $(VENV)/.runtime

serve: $(VENV)/.runtime
	$(BIN)/vigil serve

# Debian packages the tests drive as real components: Prometheus and promtool, headless Chromium for the
# web dashboard, and PostgreSQL 15 (the tests start private throwaway clusters from its binaries in
# /usr/lib/postgresql/15/bin/; the service the package may set up is never started or used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v chromium >/dev/null \
	  && command -v prometheus-alertmanager >/dev/null && [ -x /usr/lib/postgresql/15/bin/initdb ] || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager chromium postgresql; }

# The official Open Inference Protocol client, in its own environment: it pins protobuf<7, which the
# project's generated code cannot use. The tests drive it as a subprocess.
TRITON_VENV ?= .venv-tritonclient

$(TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet "tritonclient[grpc]"
	touch $@

# mypy reads the `vigil` namespace from links to the top-level folders, laid out as the install maps them.
TYPECHECK := .typecheck/vigil

$(TYPECHECK):
	mkdir -p $@
	ln -sfn ../../clients/root/__init__.py $@/__init__.py
	for d in protos server telemetry clients; do ln -sfn ../../$$d $@/$$d; done

lint: $(VENV)/.dev | $(TYPECHECK)
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: lint

test: $(VENV)/.dev $(TRITON_VENV)/.installed system-deps lint
	$(BIN)/pytest

# The batching benchmark (bench/run.py): its own export environment builds the models once, then the run
# writes docs/benchmarks.md's results section, docs/benchmark.png and docs/benchmark_results.json.
EXPORT_VENV ?= .venv-export
BENCH_MODELS ?= bench/models

$(EXPORT_VENV)/.installed: bench/requirements-export.txt
	$(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install --quiet -r bench/requirements-export.txt
	touch $@

$(BENCH_MODELS)/models.json: bench/build_models.py | $(EXPORT_VENV)/.installed
	$(EXPORT_VENV)/bin/python bench/build_models.py --out $(BENCH_MODELS)

bench: $(VENV)/.dev $(BENCH_MODELS)/models.json
	$(EDITABLE) ".[dev,bench]"
	$(BIN)/python bench/run.py --models $(BENCH_MODELS) --profile --telemetry-cost --quality-cost --rollout-cost

# The soak benchmark (bench/soak.py): ten minutes of mixed load on the bundled model, the server's resident
# memory sampled throughout (the baseline after a 240 s warm-up); writes docs/soak_results.json.
# A short run: $(BIN)/python -m bench.soak --duration 60 --warmup 15 --out /tmp/soak.json
.PHONY: soak
soak: $(VENV)/.dev
	$(BIN)/python -m bench.soak

protos: $(VENV)/.dev
	$(BIN)/python -m vigil.protos.generate

clean:
	rm -rf $(VENV) $(EXPORT_VENV) $(TRITON_VENV) .pytest_cache .mypy_cache .ruff_cache .typecheck
