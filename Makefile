# jobpulse developer commands. Every target creates .venv first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
# The npm devDependencies (buf, and the Node client's gRPC packages), installed again when package.json
# changes: a checkout that had buf alone gets the gRPC packages too.
NODE_DEPS := node_modules/.installed
PROTO_FILES := $(wildcard protos/jobpulse/v1/*.proto)
PROTOC := $(PY) -m grpc_tools.protoc -Iprotos --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc
JOBPULSE_HOST ?= 127.0.0.1
JOBPULSE_PORT ?= 50051
JOBPULSE_DATABASE_URL ?= sqlite:///jobpulse.db
export JOBPULSE_HOST JOBPULSE_PORT JOBPULSE_DATABASE_URL

.PHONY: install gen check-generated check-sdk lint docs check-docs breaking test bench bench-scale bench-pg bench-watch bench-http bench-export bench-retention bench-soak run buf clean screenshots

install: $(VENV)/.installed

# Both distributions, editable: the SDK `jobpulse` (client/) and the server `jobpulse-server` (service/),
# each a plain path entry in the venv, so a user's mypy follows `import jobpulse`.
$(VENV)/.installed: pyproject.toml client/pyproject.toml service/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --config-settings editable_mode=compat -e ./client -e './service[dev]'
	touch $@

$(NODE_DEPS): package.json
	npm install --no-audit --no-fund --silent
	touch $@

# buf and the Node client's packages (tests/clients/test_node.py needs them).
buf: $(NODE_DEPS)

gen: install
	$(PROTOC) \
	  --python_out=client --grpc_python_out=client \
	  --mypy_out=client --mypy_grpc_out=client $(PROTO_FILES)
	$(PROTOC) --include_imports --include_source_info \
	  --descriptor_set_out=client/jobpulse/v1/jobpulse.binpb $(PROTO_FILES)

check-generated: install
	rm -rf .gen-check && mkdir -p .gen-check
	$(PROTOC) \
	  --python_out=.gen-check --grpc_python_out=.gen-check \
	  --mypy_out=.gen-check --mypy_grpc_out=.gen-check $(PROTO_FILES)
	$(PROTOC) --include_imports --include_source_info \
	  --descriptor_set_out=.gen-check/jobpulse/v1/jobpulse.binpb $(PROTO_FILES)
	@for f in .gen-check/jobpulse/v1/*; do \
	  cmp -s $$f client/jobpulse/v1/$$(basename $$f) || { echo "stale generated file: client/jobpulse/v1/$$(basename $$f) (run make gen)"; exit 1; }; \
	done
	rm -rf .gen-check
	@echo "generated stubs are current"

lint: install $(NODE_DEPS)
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(VENV)/bin/ruff check client service tests bench
	$(VENV)/bin/ruff format --check client service tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The docs site (mkdocs.yml, docs/): the settings reference is written from the settings' declarations
# first, then the site is built into site/; --strict makes a broken link, anchor or include an error.
# NO_MKDOCS_2_WARNING: mkdocs-material's banner about its successor, printed on every build.
docs: install
	$(PY) -m jobpulse_server.cli.settings_reference docs/reference/configuration.md
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The committed settings reference is what the code declares (CI runs this before `make docs` rewrites it).
check-docs: install
	$(PY) -m jobpulse_server.cli.settings_reference --check docs/reference/configuration.md

# The contract is public once landed: compare it with the first commit that published it.
BREAKING_AGAINST ?= $(shell git rev-list --max-parents=0 HEAD 2>/dev/null | tail -n 1)
breaking: $(NODE_DEPS)
	@if [ -z "$(BREAKING_AGAINST)" ]; then echo "no git history: skipping buf breaking"; \
	else $(BUF) breaking --against '.git#ref=$(BREAKING_AGAINST),subdir=.' && echo "no breaking change since $(BREAKING_AGAINST)"; fi

# The Node packages too where npm exists (tests/clients/test_node.py skips only where node is absent).
test: install $(if $(shell command -v npm),$(NODE_DEPS))
	$(PY) -m pytest

# The benchmarks: one runner, `python -m bench NAME` (bench/README.md; `python -m bench list` names them).
# make bench runs the default set, each target below one scenario. Run them alone on the machine.
bench: install
	$(PY) -m bench

# The bench extra (PgQueuer, the peer measured beside jobpulse on PostgreSQL).
$(VENV)/.bench-installed: service/pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q --config-settings editable_mode=compat -e ./client -e './service[dev,bench]'
	touch $@

# ListJobs first vs deep pages at 1,000,000 jobs (PostgreSQL) and 200,000 (SQLite); --plans FILE for plans.
bench-scale: install
	$(PY) -m bench scale

# WatchJob streams: change-to-delivery latency and memory per stream at 100 / 1,000 / 5,000 streams.
bench-watch: install
	$(PY) -m bench watch

# SSE (GET /v1/jobs/{id}/events) beside WatchJob on the same server: delivery p50 / p99 at 1,000 streams on
# one job; server memory per idle SSE stream against a bare Starlette + uvicorn endpoint (and sse-starlette's,
# hence the bench extra); GetJob calls/s with the HTTP side on vs off. JOBPULSE_BENCH_HTTP_CLIENTS, _IDLE,
# _LOAD_STREAMS and the others listed in bench/http_streams.py change the sizes.
bench-http: $(VENV)/.bench-installed
	$(PY) -m bench http

# The dashboard screenshots (README, docs/dashboard.md), made by the browser tests (Debian's chromium + chromium-driver).
screenshots: install
	JOBPULSE_SCREENSHOTS=docs/screenshots JOBPULSE_TEST_DATABASES=sqlite $(PY) -m pytest -p no:cacheprovider -q \
		tests/browser/test_dashboard_browser.py -k progress_arrives_live

# ExportJobs memory: server and `jobpulse export` peak RSS at 200,000 jobs beside 2,000 (SQLite);
# JOBPULSE_BENCH_EXPORT_JOBS / JOBPULSE_BENCH_EXPORT_BASELINE change the sizes.
bench-export: install
	$(PY) -m bench export

# GetJob p99 while the expiry sweep deletes 200,000 expired jobs vs with nothing deleted (SQLite);
# JOBPULSE_BENCH_RETENTION_JOBS sets the size.
bench-retention: install
	$(PY) -m bench retention

# A mixed load on a server of default settings for 10 minutes per database (SQLite, PostgreSQL), its RSS sampled
# every 10 s; ends with the verdict line. SOAK_SECONDS changes the length.
SOAK_SECONDS ?= 600
bench-soak: install
	$(PY) -m bench soak --seconds $(SOAK_SECONDS)

# Claim + complete throughput on PostgreSQL beside PgQueuer on the same server, then complete-and-claim
# with 4 and 16 workers on one job and 4 jobs x 4 workers (alone: python -m bench pg --only scaling);
# each row the median of 3 rounds, the systems alternating (about 8 minutes).
bench-pg: $(VENV)/.bench-installed
	$(PY) -m bench pg

run: install
	$(VENV)/bin/jobpulse-server serve

# The SDK installs thin: `pip install ./client` into an empty venv pulls nothing of the server.
SERVER_ONLY := jinja2|markupsafe|starlette|uvicorn|httptools|sqlalchemy|aiosqlite|asyncpg|psycopg|psycopg-binary|alembic|httpx|prometheus-client|grpcio-health-checking|grpcio-reflection|jobpulse-server
check-sdk:
	rm -rf .sdk-check && python3 -m venv .sdk-check
	.sdk-check/bin/python -m pip install -q ./client
	.sdk-check/bin/python -m pip list --format=freeze > .sdk-check/installed.txt
	@if grep -iE '^($(SERVER_ONLY))==' .sdk-check/installed.txt; then \
	  echo "the SDK distribution pulls server packages (above)"; exit 1; fi
	.sdk-check/bin/python -c "import jobpulse; jobpulse.Client; jobpulse.Worker; jobpulse.AsyncWorker; import jobpulse.v1.job_service_pb2_grpc"
	@echo "SDK alone installs: $$(tr '\n' ' ' < .sdk-check/installed.txt)"
	rm -rf .sdk-check

clean:
	rm -rf .gen-check .sdk-check .pytest_cache .mypy_cache .ruff_cache site
