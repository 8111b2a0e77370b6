# Two commands matter: `make up` runs the stack (Docker), `make test` proves it natively.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
VENV := services/.venv
BIN := $(VENV)/bin

.PHONY: help venv native lint test

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.synced ## Install the locked Python dependencies (app, tests, linters, Locust)
$(VENV)/.synced: services/pyproject.toml services/uv.lock
	@command -v uv >/dev/null || { echo "error: uv is missing: pip install uv==$(UV_VERSION)" >&2; exit 1; }
	uv sync --project services --frozen --all-groups
	@touch $@

native: ## Build the Collector, Jaeger and Prometheus from source at the .env versions (cached)
	tests/native/build.sh

lint: venv ## ruff (lint + format) and mypy
	$(BIN)/ruff check services tests loadtest
	$(BIN)/ruff format --check services tests loadtest
	$(BIN)/mypy

test: lint native ## Lint, build the native binaries, run every test (pytest exit 5, no tests, fails too)
	$(BIN)/pytest
