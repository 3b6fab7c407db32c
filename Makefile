# budgetd — every target sets up what it needs; `make test` is all a newcomer runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PROTO  := protos/budgetd/v1/budget.proto

.PHONY: setup test lint proto proto-check bench bench-quick bench-instructions clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# `npm install` with the committed lock, not `npm ci`: buf ships one optional binary
# package per platform, the lock can list only those the registry serves here, and
# `npm ci` rejects a lock without all of them. The lock is left unchanged.
$(NODE_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(NODE_STAMP)

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	npx --no-install buf lint

# Regenerate the committed stubs; tests/unit/test_proto_fresh.py fails when they are stale.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos \
	    --python_out=server --pyi_out=server --grpc_python_out=server $(PROTO)

bench: setup
	$(PY) -m bench.core_bench --out bench/results/core.txt

bench-quick: setup
	$(PY) -m bench.core_bench --quick --out bench/results/core-quick.txt

# Instructions per call under valgrind: steady on a loaded machine, for before/after.
bench-instructions: setup
	$(PY) -m bench.instructions --out bench/results/instructions.txt

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
