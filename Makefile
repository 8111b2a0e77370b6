# Two commands matter: `make up` runs the stack (Docker), `make test` proves it natively.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# .env is the one source of versions: the image's Python and uv are the test venv's too.
env_version = $(shell sed -n 's/^$(1)=//p' .env)
PYTHON_VERSION := $(call env_version,PYTHON_VERSION)
UV_VERSION := $(call env_version,UV_VERSION)
VENV := services/.venv
BIN := $(VENV)/bin

.PHONY: help venv native lint test

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.synced ## Install the locked Python dependencies (app, tests, linters, Locust)
$(VENV)/.synced: services/pyproject.toml services/uv.lock
	@command -v uv >/dev/null || { echo "error: uv is missing: pip install uv==$(UV_VERSION)" >&2; exit 1; }
	uv sync --project services --frozen --all-groups --python $(PYTHON_VERSION)
	@touch $@

native: ## Build the Collector, Jaeger, Prometheus and Alertmanager from source at the .env versions (cached)
	native/build.sh

lint: venv ## ruff (lint + format) and mypy
	$(BIN)/ruff check services native tests loadtest grafana
	$(BIN)/ruff format --check services native tests loadtest grafana
	$(BIN)/mypy

test: lint native ## Lint, build the native binaries, run every test (pytest exit 5, no tests, fails too)
	$(BIN)/pytest

# ---- The stack, run with docker compose (needs Docker; `make test` does not) -------------------
# Options: LOKI_DRIVER=off        apps log to json-file, no Loki driver plugin (logs still reach
#                                 Loki over OTLP); see backends/compose.default-logging.yaml
#          JAEGER_STORAGE=cassandra  Jaeger on Cassandra instead of Badger (profile `cassandra`)
#          TOPOLOGY=gateway       agent + three tail-sampling gateways (backends/compose.gateway.yaml)
#          PROFILES=load          also start Locust (http://127.0.0.1:8089)
#          GRAFANA_ADMIN_PASSWORD=...  use this admin password instead of a generated one
#          SERVICE=app-a          `make logs` for one service
# Give the same LOKI_DRIVER/JAEGER_STORAGE/TOPOLOGY to later `make down/ps/logs` as to `make up`.
LOKI_DRIVER ?= on
JAEGER_STORAGE ?= badger
PROFILES ?=
SERVICE ?=
TOPOLOGY ?= single
STACK_ENV = LOKI_DRIVER='$(LOKI_DRIVER)' JAEGER_STORAGE='$(JAEGER_STORAGE)' TOPOLOGY='$(TOPOLOGY)' PROFILES='$(PROFILES)'

.PHONY: up down logs ps clean

up: ## Start the stack (Docker): Loki driver, Grafana password, build, wait until healthy, print URLs
	@$(STACK_ENV) compose/up.sh

down: ## Stop and remove the stack's containers; keep its data volumes
	@$(STACK_ENV) compose/run.sh down

logs: ## Follow the stack's logs (SERVICE=app-a for one service)
	@$(STACK_ENV) compose/run.sh logs --follow --tail=100 $(SERVICE)

ps: ## List the stack's containers with their health
	@$(STACK_ENV) compose/run.sh ps

clean: ## Stop the stack and DELETE its volumes: all traces, logs, metrics and Grafana state
	@echo "make clean: removing the containers AND the data volumes (traces, logs, metrics, Grafana's database)."
	@echo "            .secrets/grafana-admin-password is kept; the next 'make up' starts from empty stores."
	@$(STACK_ENV) compose/run.sh down --volumes

# ---- Images for Kubernetes (k8s/, README "Running on Kubernetes"; needs Docker) ---------------------
# Options: REGISTRY=registry.example.com/team   prefix the images with it and push them there
REGISTRY ?=

.PHONY: images

images: ## Build the app and Collector images for k8s/ (REGISTRY=... also pushes them there)
	@REGISTRY='$(REGISTRY)' k8s/images.sh

# ---- Load and benchmark (loadtest/) ---------------------------------------------------------------
# Options: NATIVE=1              against the native stack (native/, built by `make native`)
#                                instead of the compose stack started by `make up`
#          USERS=50 SPAWN_RATE=10 DURATION=1m   `make load-headless`'s load shape
#          BENCH_ARGS="--rounds 1 --duration 3"  passed to python -m loadtest.bench (--help lists them)
NATIVE ?=
native_load := $(filter 1 yes true,$(NATIVE))
USERS ?= 50
SPAWN_RATE ?= 10
DURATION ?= 1m
BENCH_ARGS ?=
LOCUST_HEADLESS = --headless --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(DURATION) \
	--stop-timeout 10 --only-summary --csv reports/locust --html reports/locust.html

.PHONY: load load-headless bench

load: $(if $(native_load),venv native) ## Locust web UI on http://127.0.0.1:8089 (compose; NATIVE=1: native stack until Ctrl-C)
ifeq ($(native_load),)
	@# `make up PROFILES=load`: the whole stack (idempotent) plus the locust service.
	@$(STACK_ENV) PROFILES='$(PROFILES) load' compose/up.sh
	@echo "Locust web UI: http://127.0.0.1:8089 (host app-a; 'make down' stops it with the stack)"
else
	@echo "Locust web UI: http://127.0.0.1:8089 once the native stack is up; Ctrl-C stops everything"
	$(BIN)/python loadtest/native_load.py --web-host 127.0.0.1 --web-port 8089
endif

load-headless: venv $(if $(native_load),native) ## Headless Locust (USERS, SPAWN_RATE, DURATION; NATIVE=1): summary, reports/locust*
	@mkdir -p reports
ifeq ($(native_load),)
	@$(BIN)/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)" 2>/dev/null || \
		{ echo "error: app-a does not answer on 127.0.0.1:8000: 'make up' first, or NATIVE=1" >&2; exit 1; }
	APP_B_URL=http://127.0.0.1:8001 APP_C_URL=http://127.0.0.1:8002 $(BIN)/locust -f loadtest/locustfile.py \
		--host http://127.0.0.1:8000 $(LOCUST_HEADLESS)
else
	$(BIN)/python loadtest/native_load.py $(LOCUST_HEADLESS)
endif
	@echo "reports: reports/locust_stats.csv, reports/locust_failures.csv, reports/locust.html"

bench: venv native ## Overhead (closed and open loop) + Collector capacity benchmark (~40 min, wrk, Go): docs/benchmarks.*
	@command -v wrk >/dev/null || { echo "error: make bench needs wrk: sudo apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)" >&2; exit 1; }
	@loadtest/build_go_tool.sh telemetrygen >/dev/null
	@loadtest/build_go_tool.sh vegeta >/dev/null
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)
