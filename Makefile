# budgetd — every target sets up what it needs; `make run` and `make test` are all a
# newcomer runs. `make run` needs only Python >= 3.11 (with a C compiler and the Python
# headers it runs the core compiled by mypyc, else the pure-Python core, and says so);
# `make test` and `make lint` also need Node.js/npm (buf, and the Node client's test).
# Set-up is quiet: what pip, npm and mypyc print goes to $(LOG).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
NODE_CLIENT_STAMP := client/node/node_modules/.installed
LOG    := build/setup.log
# The compiled tree: a copy of server/budgetd with the core compiled by mypyc. Kept apart
# from the sources so an edit is never shadowed by an older compiled module; make rebuilds
# it whenever a source changes, and puts it first on PYTHONPATH only where asked.
NATIVE := $(CURDIR)/build/native
NATIVE_STAMP := $(NATIVE)/.built
SOURCES := $(shell find server/budgetd \( -name '*.py*' -o -name '*.binpb' \) -not -path '*/__pycache__/*')
CORE_SOURCES := $(shell find server/budgetd/core -name '*.py' -not -path '*/__pycache__/*')
WITH_NATIVE := BUDGETD_CORE=compiled PYTHONPATH=$(NATIVE)
# Exit 0 when mypyc can build here: a C compiler ($$CC, else Python's) and Python.h.
CAN_COMPILE = $(PY) -c 'import os, shlex, shutil, sysconfig as s; \
    cc = shlex.split(os.environ.get("CC") or s.get_config_var("CC") or "cc")[0]; \
    h = os.path.join(s.get_paths()["include"], "Python.h"); \
    raise SystemExit(not (shutil.which(cc) and os.path.exists(h)))'
PURE := running the pure-Python core (slower)

.PHONY: setup node native run test test-node lint proto bench bench-durability bench-quick bench-instructions bench-setups bench-global clean

# The venv: the SDK's distribution (client/, with budgetctl) and the daemon's, editable.
# Both are uninstalled first: an older venv's budgetd owned budgetctl, and removing that
# budgetd after installing the client would take the client's budgetctl with it.
$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	    echo "budgetd needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)" \
	        "(choose another with make PYTHON=python3.12 ...)" >&2; exit 1; }
	@mkdir -p $(dir $(LOG))
	@echo "setting up $(VENV) with pip (log: $(LOG))"
	@{ echo "== $$(date -u +%FT%TZ) pip"; \
	   $(PYTHON) -m venv $(VENV) && \
	   { $(PY) -m pip install --upgrade pip || echo "pip not upgraded: going on with the venv's"; } && \
	   $(PY) -m pip uninstall -y budgetd budgetd-client && \
	   $(PY) -m pip install -e ./client -e '.[dev,global]'; } >>$(LOG) 2>&1 || { \
	    echo "set-up failed (python -m venv or pip install): see $(LOG)" >&2; exit 1; }
	@touch $@

# `npm install` with the committed lock, not `npm ci`: buf ships one optional binary
# package per platform, the lock can list only those the registry serves here, and
# `npm ci` rejects a lock without all of them. `--no-save` leaves the lock unchanged.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { \
	    echo "make test and make lint need Node.js and npm (buf, the Node client's test);" \
	        "make run does not" >&2; exit 1; }
	@mkdir -p $(dir $(LOG))
	@echo "installing buf with npm (log: $(LOG))"
	@{ echo "== $$(date -u +%FT%TZ) npm install"; \
	   npm install --no-save --no-audit --no-fund --loglevel=error; } >>$(LOG) 2>&1 || { \
	    echo "npm install failed: see $(LOG)" >&2; exit 1; }
	@touch $@

# The Node example client pins its own lock; `npm ci` installs exactly that.
$(NODE_CLIENT_STAMP): client/node/package.json client/node/package-lock.json
	@command -v npm >/dev/null || { \
	    echo "make test needs Node.js and npm (the Node client's test); make run does not" >&2; \
	    exit 1; }
	@mkdir -p $(dir $(LOG))
	@echo "installing the Node client's packages with npm (log: $(LOG))"
	@{ echo "== $$(date -u +%FT%TZ) npm ci (client/node)"; \
	   cd client/node && npm ci --no-audit --no-fund --loglevel=error; } >>$(LOG) 2>&1 || { \
	    echo "npm ci in client/node failed: see $(LOG)" >&2; exit 1; }
	@touch $@

node: $(NODE_STAMP) $(NODE_CLIENT_STAMP)

setup: $(STAMP) node

# The daemon on its embedded defaults (or pass flags: make run ARGS="--config my.toml").
# Listens on $$XDG_RUNTIME_DIR/budgetd.sock (else a per-user directory under the temp
# dir) and 127.0.0.1:50051. The compiled core when it can be built, else the pure one.
run: $(STAMP)
	@core=pure; \
	if ! $(CAN_COMPILE); then \
	    echo "no C compiler or Python headers (gcc, python3-dev): $(PURE)"; \
	else \
	    $(MAKE) --no-print-directory -q $(NATIVE)/.core 2>/dev/null || \
	        echo "compiling the core with mypyc (about a minute; log: $(LOG))"; \
	    if $(MAKE) --no-print-directory native >>$(LOG) 2>&1; then core=compiled; \
	    else echo "the mypyc build failed (see $(LOG)): $(PURE)"; fi; \
	fi; \
	if [ $$core = compiled ]; then $(WITH_NATIVE) exec $(PY) -m budgetd $(ARGS); fi; \
	exec $(PY) -m budgetd $(ARGS)

# The core is compiled only when a core source changed (it takes a minute); the rest of
# the package is copied beside it whenever any source changed.
$(NATIVE)/.core: $(STAMP) $(CORE_SOURCES)
	@echo "compiling the core with mypyc (about a minute; log: $(LOG))"
	@rm -rf $(NATIVE)/budgetd $(NATIVE)/*.so
	@mkdir -p $(NATIVE)/budgetd $(dir $(LOG))
	@cp server/budgetd/__init__.py $(NATIVE)/budgetd/
	@cp -r server/budgetd/core $(NATIVE)/budgetd/core
	@find $(NATIVE)/budgetd -name __pycache__ -prune -exec rm -rf {} +
	@{ echo "== $$(date -u +%FT%TZ) mypyc"; \
	   cd $(NATIVE) && $(abspath $(VENV))/bin/mypyc --ignore-missing-imports budgetd/core; \
	 } >>$(LOG) 2>&1 || { echo "the mypyc build of the core failed: see $(LOG)" >&2; exit 1; }
	@touch $@

$(NATIVE_STAMP): $(NATIVE)/.core $(SOURCES)
	@find $(NATIVE)/budgetd -mindepth 1 -maxdepth 1 ! -name core -exec rm -rf {} +
	@tar -C server --exclude=budgetd/core --exclude=__pycache__ -cf - budgetd | tar -C $(NATIVE) -xf -
	@touch $@

native: $(NATIVE_STAMP)

# The whole suite on the sources, then the core's suite again on the compiled core
# (tests/conftest.py fails the run if BUDGETD_CORE=compiled finds the pure one).
test: $(STAMP) node native
	$(PY) -m pytest
	$(WITH_NATIVE) $(PY) -m pytest tests/unit
	$(MAKE) --no-print-directory test-node

# The Node client's test starts the real daemon (compiled core) with this venv's Python.
test-node: $(STAMP) node native
	cd client/node && $(WITH_NATIVE) BUDGETD_PYTHON=$(CURDIR)/$(PY) npm test

lint: $(STAMP) $(NODE_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	npx --no-install buf lint

# Regenerate the committed stubs, the daemon's (server/budgetd/v1) and the SDK's
# (client/budgetd_client/v1), and the descriptor set reflection serves
# (server/budgetd/v1/budget.binpb); tests/unit/test_proto_fresh.py fails when any is stale.
proto: $(STAMP)
	$(PY) protos/generate.py

# One report (bench/README.md): budgetd side by side with a do-nothing floor of its
# contract and a Redis + Lua peer, each cell from a separate load generator, then the
# extra figures and the core, service, metrics and durability benches, their tables
# embedded. Writes bench/results/side-by-side.md and .json; about 25 minutes.
bench: $(STAMP) native
	$(WITH_NATIVE) $(PY) -m bench.side_by_side --durability-ledgers $(BENCH_LEDGERS)
	$(WITH_NATIVE) $(PY) -m bench.global_bench --out bench/results/global.md

# Durability modes side by side, snapshots and recovery at 1M ledgers (several minutes;
# BENCH_LEDGERS=100000 for a quicker run).
BENCH_LEDGERS ?= 1000000
bench-durability: $(STAMP) native
	$(WITH_NATIVE) $(PY) -m bench.durability_bench --ledgers $(BENCH_LEDGERS) \
	    --out bench/results/durability.txt

# Under a minute: budgetd vs the floor for Consume, Check and BatchStream at c=64 over the
# socket, one repetition, and the core's quick run (bench/results/*-quick.*, not kept).
bench-quick: $(STAMP) native
	$(WITH_NATIVE) $(PY) -m bench.side_by_side --quick

# Server set-ups compared (grpc.aio vs the thread-pool server, uvloop vs asyncio, server
# options): bench/results/setups.md, about 5 minutes.
bench-setups: $(STAMP) native
	$(WITH_NATIVE) $(PY) -m bench.setups --out bench/results/setups.md

# Instructions per call under valgrind: steady on a loaded machine, for before/after.
bench-instructions: $(STAMP) native
	$(WITH_NATIVE) $(PY) -m bench.instructions --out bench/results/instructions.txt

# Global policies (Redis) against local ones, Redis calls per 1,000 decisions, overshoot
# against the bound at three slice sizes: bench/results/global.md, about three minutes.
bench-global: $(STAMP) native
	$(WITH_NATIVE) $(PY) -m bench.global_bench --out bench/results/global.md

clean:
	rm -rf $(VENV) build node_modules client/node/node_modules .mypy_cache .ruff_cache .pytest_cache \
	    .hypothesis *.egg-info client/*.egg-info
