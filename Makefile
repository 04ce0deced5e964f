# recap-serve: one venv (.venv) for everything; `make serve` installs only what serving needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: api-keys serve test models lint typecheck unit install install-serve system-deps bench bench-ab bench-workers bench-instructions bench-generate load load-distributed clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.serve-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@ $(VENV)/.serve-installed

install-serve: $(VENV)/.serve-installed
install: $(VENV)/.dev-installed

## serve: serve the bundled model repository on http://$(HOST):$(PORT)
serve: $(VENV)/.serve-installed
	$(PY) -m service --host $(HOST) --port $(PORT) --model-repository models

## test: lint, type-check and run the whole test suite
test: install lint typecheck unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest $(PYTEST_ARGS)

## models: retrain the whole zoo from scratch and rewrite models/
models: install
	$(PY) -m training train --all --output models

## bench: V2 JSON infer req/s on one pinned core vs a bare FastAPI endpoint (wrk: make system-deps)
BENCH_ARGS ?=
bench: install
	$(PY) -m bench.bench $(BENCH_ARGS)

## bench-ab: the no-regression rule: this checkout vs BASE (default HEAD^), 3 alternating runs each
BASE ?= HEAD^
bench-ab: install
	$(PY) -m bench.bench --ab $(BASE) $(BENCH_ARGS)

## bench-workers: --workers 1 vs 2 (shared socket, SO_REUSEPORT), nothing pinned; RSS/PSS per worker
bench-workers: install
	$(PY) -m bench.bench --workers $(BENCH_ARGS)

## bench-instructions: instructions per in-process V2 infer request, this checkout vs BASE (valgrind)
bench-instructions: install
	$(PY) -m bench.instructions $(BASE)

## bench-generate: pydoc-gpt tokens/s and event-loop latency, steps in worker threads vs inline
bench-generate: install
	$(PY) -m bench.generate_bench $(BENCH_ARGS)

## system-deps: Debian packages some tests and benchmarks use (wrk, prometheus, docker-compose, valgrind,
## podman with runc, netavark and aardvark-dns, mmdebstrap for the real-stack tests); idempotent
SYSTEM_PACKAGES := wrk prometheus docker-compose valgrind podman runc netavark aardvark-dns mmdebstrap
system-deps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
	  echo "system-deps: $(SYSTEM_PACKAGES) already installed"; \
	else \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(SYSTEM_PACKAGES) >/dev/null; \
	fi

## load: Locust headless against a running server; CSV stats and the HTML report land in $(LOAD_REPORTS)/
LOAD_HOST ?= http://$(HOST):$(PORT)
LOAD_USERS ?= 10
LOAD_SPAWN_RATE ?= 5
LOAD_TIME ?= 1m
LOAD_TAGS ?=
LOAD_EXCLUDE_TAGS ?=
LOAD_WORKERS ?= 2
LOAD_MASTER_PORT ?= 5557
LOAD_REPORTS ?= reports/load
LOCUST := $(VENV)/bin/locust -f load/locustfile.py
LOCUST_RUN := --headless --host $(LOAD_HOST) -u $(LOAD_USERS) -r $(LOAD_SPAWN_RATE) -t $(LOAD_TIME) \
	--csv $(LOAD_REPORTS)/locust --csv-full-history --html $(LOAD_REPORTS)/locust.html \
	--json-file $(LOAD_REPORTS)/locust --only-summary \
	$(if $(LOAD_TAGS),--tags $(LOAD_TAGS)) $(if $(LOAD_EXCLUDE_TAGS),--exclude-tags $(LOAD_EXCLUDE_TAGS))

$(VENV)/.load-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[load]'
	touch $@

load: $(VENV)/.load-installed
	mkdir -p $(LOAD_REPORTS)
	$(LOCUST) $(LOCUST_RUN)

## load-distributed: the same run from one Locust master and $(LOAD_WORKERS) worker processes
load-distributed: $(VENV)/.load-installed
	mkdir -p $(LOAD_REPORTS)
	for i in $$(seq $(LOAD_WORKERS)); do \
	  $(LOCUST) --worker --master-host 127.0.0.1 --master-port $(LOAD_MASTER_PORT) & \
	done; \
	$(LOCUST) --master --master-bind-host 127.0.0.1 --master-bind-port $(LOAD_MASTER_PORT) \
	  --expect-workers $(LOAD_WORKERS) $(LOCUST_RUN); rc=$$?; wait; exit $$rc

## api-keys: the compose stack's secrets in secrets/ (a key file with digests only, the Locust key); prints the operator key
api-keys: $(VENV)/.serve-installed
	$(PY) -m service.keys compose-secrets secrets

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
