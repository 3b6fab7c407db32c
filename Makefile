# budgetd — every target sets up what it needs; `make test` is all a newcomer runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PROTO  := protos/budgetd/v1/budget.proto
# The compiled tree: a copy of server/budgetd with the core compiled by mypyc. Kept apart
# from the sources so an edit is never shadowed by an older compiled module; make rebuilds
# it whenever a source changes, and puts it first on PYTHONPATH only where asked.
NATIVE := $(CURDIR)/build/native
NATIVE_STAMP := $(NATIVE)/.built
SOURCES := $(shell find server/budgetd -name '*.py*' -not -path '*/__pycache__/*')
CORE_SOURCES := $(shell find server/budgetd/core -name '*.py' -not -path '*/__pycache__/*')
WITH_NATIVE := BUDGETD_CORE=compiled PYTHONPATH=$(NATIVE)

NODE_CLIENT_STAMP := client/node/node_modules/.installed

.PHONY: setup native run test test-node lint proto proto-check bench bench-quick bench-instructions clean

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

# The Node example client pins its own lock; `npm ci` installs exactly that.
$(NODE_CLIENT_STAMP): client/node/package.json client/node/package-lock.json
	cd client/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(NODE_STAMP) $(NODE_CLIENT_STAMP)

# The daemon on its embedded defaults (or pass flags: make run ARGS="--config my.toml"),
# on the compiled core. Listens on $$XDG_RUNTIME_DIR/budgetd.sock (else a per-user
# directory under the temp dir) and 127.0.0.1:50051.
run: setup native
	$(WITH_NATIVE) exec $(PY) -m budgetd $(ARGS)

# The core is compiled only when a core source changed (it takes a minute); the rest of
# the package is copied beside it whenever any source changed.
$(NATIVE)/.core: $(STAMP) $(CORE_SOURCES)
	rm -rf $(NATIVE)/budgetd $(NATIVE)/*.so
	mkdir -p $(NATIVE)/budgetd
	cp server/budgetd/__init__.py $(NATIVE)/budgetd/
	cp -r server/budgetd/core $(NATIVE)/budgetd/core
	find $(NATIVE)/budgetd -name __pycache__ -prune -exec rm -rf {} +
	cd $(NATIVE) && $(CURDIR)/$(VENV)/bin/mypyc --ignore-missing-imports budgetd/core
	touch $@

$(NATIVE_STAMP): $(NATIVE)/.core $(SOURCES)
	find $(NATIVE)/budgetd -mindepth 1 -maxdepth 1 ! -name core -exec rm -rf {} +
	tar -C server --exclude=budgetd/core --exclude=__pycache__ -cf - budgetd | tar -C $(NATIVE) -xf -
	touch $@

native: $(NATIVE_STAMP)

# The whole suite on the sources, then the core's suite again on the compiled core
# (tests/conftest.py fails the run if BUDGETD_CORE=compiled finds the pure one).
test: setup native
	$(PY) -m pytest
	$(WITH_NATIVE) $(PY) -m pytest tests/unit
	$(MAKE) --no-print-directory test-node

# The Node client's test starts the real daemon (compiled core) with this venv's Python.
test-node: setup native
	cd client/node && $(WITH_NATIVE) BUDGETD_PYTHON=$(CURDIR)/$(PY) npm test

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	npx --no-install buf lint

# Regenerate the committed stubs; tests/unit/test_proto_fresh.py fails when they are stale.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos \
	    --python_out=server --pyi_out=server --grpc_python_out=server $(PROTO)

bench: setup native
	$(WITH_NATIVE) $(PY) -m bench.core_bench --out bench/results/core.txt
	$(WITH_NATIVE) $(PY) -m bench.service_bench --out bench/results/service.txt

bench-quick: setup native
	$(WITH_NATIVE) $(PY) -m bench.core_bench --quick --out bench/results/core-quick.txt

# Instructions per call under valgrind: steady on a loaded machine, for before/after.
bench-instructions: setup native
	$(WITH_NATIVE) $(PY) -m bench.instructions --out bench/results/instructions.txt

clean:
	rm -rf $(VENV) build node_modules client/node/node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
