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
	$(BIN)/ruff check services tests loadtest grafana
	$(BIN)/ruff format --check services tests loadtest grafana
	$(BIN)/mypy

test: lint native ## Lint, build the native binaries, run every test (pytest exit 5, no tests, fails too)
	$(BIN)/pytest

# ---- The stack, run with docker compose (needs Docker; `make test` does not) -------------------
# Options: LOKI_DRIVER=off        apps log to json-file, no Loki driver plugin (logs still reach
#                                 Loki over OTLP); see backends/compose.default-logging.yaml
#          JAEGER_STORAGE=cassandra  Jaeger on Cassandra instead of Badger (profile `cassandra`)
#          PROFILES=load          also start Locust (http://127.0.0.1:8089)
#          GRAFANA_ADMIN_PASSWORD=...  use this admin password instead of a generated one
#          SERVICE=app-a          `make logs` for one service
# Give the same LOKI_DRIVER/JAEGER_STORAGE to later `make down/ps/logs` as to `make up`.
LOKI_DRIVER ?= on
JAEGER_STORAGE ?= badger
PROFILES ?=
SERVICE ?=
STACK_ENV = LOKI_DRIVER='$(LOKI_DRIVER)' JAEGER_STORAGE='$(JAEGER_STORAGE)' PROFILES='$(PROFILES)'

.PHONY: up down logs ps clean

up: ## Start the stack (Docker): Loki driver, Grafana password, build, wait until healthy, print URLs
	@$(STACK_ENV) backends/scripts/up.sh

down: ## Stop and remove the stack's containers; keep its data volumes
	@$(STACK_ENV) backends/scripts/compose.sh down

logs: ## Follow the stack's logs (SERVICE=app-a for one service)
	@$(STACK_ENV) backends/scripts/compose.sh logs --follow --tail=100 $(SERVICE)

ps: ## List the stack's containers with their health
	@$(STACK_ENV) backends/scripts/compose.sh ps

clean: ## Stop the stack and DELETE its volumes: all traces, logs, metrics and Grafana state
	@echo "make clean: removing the containers AND the data volumes (traces, logs, metrics, Grafana's database)."
	@echo "            .secrets/grafana-admin-password is kept; the next 'make up' starts from empty stores."
	@$(STACK_ENV) backends/scripts/compose.sh down --volumes
