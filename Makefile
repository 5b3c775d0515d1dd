# Community Levels. `make run` starts everything; `make test` runs every test.
# Servers (Kafka, PostgreSQL, Redis) run as local processes with data under .local/.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVERS := scripts/local/servers.sh
SERVICES := scripts/local/services.sh
# Migrations run as the role that owns the schema; the services get roles of their own.
OWNER_DATABASE_URL ?= postgresql+asyncpg://cl_owner:cl_owner@localhost:$${PG_PORT:-15432}/community_levels

.PHONY: run stop status test test-unit faults servers migrate lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

servers: $(VENV)/.installed
	$(SERVERS) up

migrate: servers
	CL_DATABASE_URL="$(OWNER_DATABASE_URL)" $(VENV)/bin/alembic upgrade head

run: migrate
	$(SERVICES) start
	@echo
	@echo "Community Levels is running:"
	@echo "  ingest  http://127.0.0.1:$${CL_INGEST_PORT:-8001}  (POST /v1/events)"
	@echo "  api     http://127.0.0.1:$${CL_API_PORT:-8002}  (GET /v1/members/{id}, /v1/levels)"
	@echo "  scorer  http://127.0.0.1:$${CL_SCORER_PORT:-8003}  (/healthz, /readyz, /metrics)"
	@echo "  webhooks http://127.0.0.1:$${CL_WEBHOOKS_PORT:-8004}  (the dispatcher: /healthz, /readyz, /metrics; .venv/bin/cl webhook add)"
	@echo "  kafka localhost:19092, postgres localhost:15432, redis localhost:16379"
	@echo "  API key for local use: $${CL_INGEST_API_KEYS:-local-dev-key}"
	@echo "Logs in .local/logs/; 'make stop' stops everything."

stop:
	-$(SERVICES) stop
	$(SERVERS) down

status:
	-$(SERVICES) status
	-$(SERVERS) status

test: servers
	scripts/local/browser.sh install
	$(PY) -m pytest -m "not long" tests/unit tests/integration tests/e2e

# Every fault of docs/RELIABILITY.md in its long form (make test runs the short forms);
# figures land in .local/faults/.
faults: servers
	$(PY) -m pytest -m long tests/e2e/test_faults.py

test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared services tests migrations

# Throughput and latency beside same-run baselines (docs/PERFORMANCE.md); not part of `make test`.
# Uses make run's servers; BENCH_* variables set the sizes (README "Benchmark"). It installs its
# load generators (wrk, hey) and the scorer's profiler (py-spy); a section whose tool could not be
# installed says so in the table, and the others still run.
bench: servers migrate
	-scripts/local/loadgen.sh install
	-$(PY) -m pip show -q py-spy >/dev/null 2>&1 || $(PY) -m pip install -q py-spy
	$(PY) -m benchmarks.bench
