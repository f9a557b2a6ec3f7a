# Everything runs from a project-local virtual environment, so a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install serve check lint typecheck layers proto proto-check test unit integration bench bench-http clean

install: $(VENV)/.installed

# The client is its own distribution (client/); named together, pip takes it from here, not PyPI.
$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
# setuptools warns at every editable install of a flat layout that folders named like the
# packages may shadow them; here those folders are the packages.
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet -e ./client -e '.[dev]'
	touch $@

## Start the server on 127.0.0.1:50051 serving the offline models (echo, markov).
serve: install
	$(BIN)/python -m infrastructure.cli serve

## The whole suite: lint, types, layering contract, generated-code freshness, all tests.
check: install lint typecheck layers proto-check test

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

## import-linter for the contracts between packages; check_layers.py for the inner layers'
## allow-list (domain: standard library only; application: that and domain).
layers: install
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_layers.py

proto: install
	$(BIN)/python proto/generate.py

proto-check: install
	$(BIN)/python proto/generate.py --check

## Tests run beside a private Redis and PostgreSQL (installed from Debian packages if missing,
## on loopback ports of their own, stopped afterwards): scripts/services.sh.
test: install
	scripts/services.sh run -- $(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

integration: install
	scripts/services.sh run -- $(BIN)/pytest tests/integration

## Benchmarks against a no-op grpc.aio floor; results in bench/results/. BENCH_ARGS=--quick for
## a run under two minutes, BENCH_ARGS="--only 'proxy-unary-*'" to pick scenarios, --list to list.
bench: install
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

## The HTTP API against gRPC and a no-op ASGI floor, side by side (bench/results/http.md).
bench-http: install
	$(BIN)/python -m bench.http $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
