# gremio: `make up` runs it all, `make test` proves it. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: up up-cluster down status test lint fmt bench bench-api secrets clean-local help

help:
	@echo "make up      install what is missing and start the whole stack"
	@echo "make up-cluster  the same with three Kafka nodes, two of each service, nginx and Celery"
	@echo "make status  show each part's health"
	@echo "make down    stop everything"
	@echo "make test    run the whole test suite against throwaway Kafka and PostgreSQL"
	@echo "make secrets write fresh random secrets for docker compose into .env (0600)"

$(BIN)/python:
	@deploy/ensure-venv.sh "$(PYTHON)" "$(VENV)"

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml | $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -c constraints.txt
	@# setuptools warns at length about editable installs; show its output only on failure.
	@out=$$($(PIP) install -q --no-deps -e . 2>&1) || { echo "$$out" >&2; exit 1; }
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	@touch $@

up: $(VENV)/.installed
	@$(BIN)/gremio up

up-cluster: $(VENV)/.installed
	@$(BIN)/gremio up --cluster

secrets: $(VENV)/.installed
	@$(BIN)/gremio secrets

status: $(VENV)/.installed
	@$(BIN)/gremio status

down:
	@if [ -x $(BIN)/gremio ]; then $(BIN)/gremio down; else echo "gremio is not installed: nothing to stop"; fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# pytest exits 5 when it collects nothing; that is a failure here, not a pass.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# detect-secrets over every file git tracks or would add (no network verification). No
	@# secret is shipped (docs/SECURITY.md); mark a test's false positive inline with
	@# `pragma: allowlist secret` (docs/RELIABILITY.md).
	@set -o pipefail; git ls-files -z -co --exclude-standard \
	  | xargs -0 $(BIN)/detect-secrets-hook -n
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# One benchmark: `make bench BENCH=stock` (api, drain, stock, locations, premium; docs/BENCHMARKS.md).
BENCH ?= api
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.$(BENCH) $(BENCH_ARGS)

# gremio's POST /v1/sales against the Express + kafkajs anchors (npm ci-ed on first use; needs node, npm, wrk).
bench-api: $(VENV)/.installed-dev
	$(BIN)/python -m bench.api --anchors-only --duration 8 --rounds 5 $(BENCH_ARGS)
