# recap-serve: one venv (.venv) for everything; `make serve` installs only what serving needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test models lint typecheck unit install install-serve system-deps bench load clean

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

## system-deps: Debian packages some tests and benchmarks use (wrk, prometheus, docker-compose)
system-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk prometheus docker-compose >/dev/null

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
