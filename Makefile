# jobpulse developer commands. Every target creates .venv first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
# The npm devDependencies (buf, and the Node client's gRPC packages), installed again when package.json
# changes: a checkout that had buf alone gets the gRPC packages too.
NODE_DEPS := node_modules/.installed
PROTO_FILES := $(wildcard protos/jobpulse/v1/*.proto)
# The stubs in client/jobpulse/v1/ are made by pinned generators in a venv of their own (.gen-venv), never
# by the dev venv's newer ones, so that one set runs on every runtime client/pyproject.toml allows:
# - protoc from grpcio-tools 1.72.1 writes gencode 6.30.0: protobuf runtimes 6.30 and later load it, and
#   protobuf supports gencode of major V on runtimes V and V+1, so 6.30 through 7.x (docs/sdk.md, Dependencies);
# - the _pb2_grpc.py files come from grpcio-tools 1.62.3: from 1.63 they check grpc.__version__ at import
#   (a warning, an error from 1.66) and pass `_registered_method`, which grpcio 1.62 refuses.
GEN_VENV := .gen-venv
GEN_PY := $(GEN_VENV)/bin/python
# googleapis-common-protos brings google/api/annotations.proto and http.proto (the google.api.http rules of
# the JSON face) as files, found on its site-packages directory.
GEN_PINS := grpcio-tools==1.72.1 grpcio==1.72.1 protobuf==6.33.6 mypy-protobuf==5.1.0 types-protobuf==7.35.1.20260906 \
  googleapis-common-protos==1.76.0
GEN_GRPC_PLUGIN_PIN := grpcio-tools==1.62.3
GEN_SITE = $$($(GEN_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PROTOC = $(GEN_PY) -m grpc_tools.protoc -Iprotos -I$(GEN_VENV)/protos -I$(GEN_SITE) --plugin=protoc-gen-mypy=$(GEN_VENV)/bin/protoc-gen-mypy \
  --plugin=protoc-gen-mypy_grpc=$(GEN_VENV)/bin/protoc-gen-mypy_grpc
PROTOC_GRPC = PYTHONPATH=$(GEN_VENV)/grpc-plugin $(GEN_PY) -m grpc_tools.protoc -Iprotos -I$(GEN_VENV)/protos -I$(GEN_SITE)
JOBPULSE_HOST ?= 127.0.0.1
JOBPULSE_PORT ?= 50051
JOBPULSE_DATABASE_URL ?= sqlite:///jobpulse.db
export JOBPULSE_HOST JOBPULSE_PORT JOBPULSE_DATABASE_URL

.PHONY: install buf-deps gen unasync check-generated check-sdk check-sdk-pins dist check-deploy lint openapi check-openapi docs check-docs breaking test test-slow bench bench-scale bench-pg bench-watch bench-http bench-export bench-retention bench-soak run buf clean screenshots

install: $(VENV)/.installed

# Both distributions, editable: the SDK `jobpulse` (client/) and the server `jobpulse-server` (service/),
# each a plain path entry in a .pth file of the venv, so a user's mypy follows `import jobpulse` (their
# pyproject.toml files name the package root for that: setuptools' default is an import hook mypy cannot
# see, and its "compat" mode, which gave the same .pth, is deprecated).
$(VENV)/.installed: pyproject.toml client/pyproject.toml service/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./client -e './service[dev]'
	touch $@

$(NODE_DEPS): package.json
	npm install --no-audit --no-fund --silent
	touch $@

# buf and the Node client's packages (tests/clients/test_node.py needs them).
buf: $(NODE_DEPS) buf-deps

# The googleapis protos the jobpulse protos import, for buf (buf.yaml): copied from the installed
# googleapis-common-protos, never committed.
BUF_DEPS := .buf-deps/google/api/annotations.proto .buf-deps/google/api/http.proto .buf-deps/google/api/client.proto \
  .buf-deps/google/api/field_behavior.proto .buf-deps/google/api/launch_stage.proto .buf-deps/google/rpc/status.proto \
  .buf-deps/google/longrunning/operations.proto
buf-deps: $(BUF_DEPS)
# googleapis-common-protos ships google.longrunning's file as operations_proto.proto, while its Python
# module registers (and so the jobpulse protos import) the name google/longrunning/operations.proto.
.buf-deps/google/longrunning/operations.proto: $(VENV)/.installed
	mkdir -p $(@D)
	cp "$$($(PY) -c 'import os, google.longrunning.operations_proto_pb2 as m; print(os.path.dirname(m.__file__))')/operations_proto.proto" $@
.buf-deps/google/%.proto: $(VENV)/.installed
	mkdir -p $(@D)
	cp "$$($(PY) -c 'import os, google.api.annotations_pb2 as m; print(os.path.dirname(os.path.dirname(m.__file__)))')/$*.proto" $@

$(GEN_VENV)/.installed: Makefile
	rm -rf $(GEN_VENV) && python3 -m venv $(GEN_VENV)
	$(GEN_PY) -m pip install -q $(GEN_PINS)
	$(GEN_PY) -m pip install -q --no-deps --target $(GEN_VENV)/grpc-plugin $(GEN_GRPC_PLUGIN_PIN)
	mkdir -p $(GEN_VENV)/protos/google/longrunning
	cp "$(GEN_SITE)/google/longrunning/operations_proto.proto" $(GEN_VENV)/protos/google/longrunning/operations.proto
	touch $@

# Writes every generated file of client/jobpulse/v1/ into $(1).
define generate
	$(PROTOC) --python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTO_FILES)
	$(PROTOC_GRPC) --grpc_python_out=$(1) $(PROTO_FILES)
	$(PROTOC) --include_imports --include_source_info \
	  --descriptor_set_out=$(1)/jobpulse/v1/jobpulse.binpb $(PROTO_FILES)
endef

gen: $(GEN_VENV)/.installed
	$(call generate,client)

# The SDK's blocking half (client/jobpulse/_sync/client.py, worker.py), written from its async source
# (client/jobpulse/_async/) by scripts/unasync.py; `make lint` fails while they differ.
unasync: install
	$(PY) scripts/unasync.py

check-generated: $(GEN_VENV)/.installed
	rm -rf .gen-check && mkdir -p .gen-check/jobpulse/v1
	$(call generate,.gen-check)
	@for f in .gen-check/jobpulse/v1/*; do \
	  cmp -s $$f client/jobpulse/v1/$$(basename $$f) || { echo "stale generated file: client/jobpulse/v1/$$(basename $$f) (run make gen)"; exit 1; }; \
	done
	rm -rf .gen-check
	@echo "generated stubs are current"

lint: install $(NODE_DEPS) buf-deps
	$(BUF) lint
	$(BUF) format protos --diff --exit-code
	$(VENV)/bin/ruff check client service tests bench scripts
	$(VENV)/bin/ruff format --check client service tests bench scripts
	$(PY) scripts/unasync.py --check
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m jobpulse_server.http.openapi --check

# The JSON face's OpenAPI 3.1 document, protos/openapi.json, made from the protos' google.api.http rules and
# comments (service/jobpulse_server/http/openapi.py): run after a .proto changes (and `make gen`); commit it.
openapi: install
	$(PY) -m jobpulse_server.http.openapi

# The committed protos/openapi.json is what the protos make now (make lint runs this too).
check-openapi: install
	$(PY) -m jobpulse_server.http.openapi --check

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
breaking: $(NODE_DEPS) buf-deps
	@if [ -z "$(BREAKING_AGAINST)" ]; then echo "no git history: skipping buf breaking"; \
	else $(BUF) breaking protos --against '.git#ref=$(BREAKING_AGAINST),subdir=protos' && echo "no breaking change since $(BREAKING_AGAINST)"; fi

# The Node packages too where npm exists (tests/clients/test_node.py skips only where node is absent).
# Two pytest-xdist workers share the suite file by file (most tests wait on a server, not the CPU); then
# tests/faults runs alone: its kill -9 and outage tests time restarts and lock waits that a second busy
# worker would stretch.
test: install $(if $(shell command -v npm),$(NODE_DEPS))
	$(PY) -m pytest -n 2 --dist loadfile --ignore=tests/faults
	$(PY) -m pytest tests/faults

# The tests make test leaves out: marked slow (long kill-and-restart runs) or full_matrix (the PostgreSQL
# runs of the dashboard, docs, SDK and foreign-client tests).
test-slow: install
	$(PY) -m pytest -m "slow or full_matrix"

# The benchmarks: one runner, `python -m bench NAME` (bench/README.md; `python -m bench list` names them).
# make bench runs the default set, each target below one scenario. Run them alone on the machine.
bench: install
	$(PY) -m bench

# The bench extra (PgQueuer, the peer measured beside jobpulse on PostgreSQL).
$(VENV)/.bench-installed: service/pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e ./client -e './service[dev,bench]'
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

# The SDK at the oldest versions it allows (tests/deploy/sdk-oldest.txt), in a fresh venv that holds the SDK
# alone: its stubs import with warnings as errors, then its tests run there (tests/sdk but
# test_sdk_tracing.py, which reads the server's own spans; tests/e2e/test_async.py), their servers run by the
# dev venv as processes of their own (tests/deploy/sdk_pins_plugin.py). The newest versions are the dev
# venv's own (it installs the SDK's dependencies unpinned): its stubs are imported there with warnings as
# errors, and make test runs these tests there (a second fresh venv at them added 60 s to CI).
SDK_PIN_TEST_DEPS := pytest pytest-asyncio pytest-timeout grpcio-testing grpcio-health-checking
SDK_PIN_IMPORTS := import jobpulse, jobpulse.cli; from jobpulse import Client, AsyncClient, Worker, AsyncWorker; \
  from jobpulse.v1 import admin_service_pb2_grpc, job_service_pb2_grpc, worker_service_pb2_grpc
check-sdk-pins: install
	rm -rf .sdk-pins
	python3 -m venv .sdk-pins
	.sdk-pins/bin/python -m pip install -q --upgrade pip
	.sdk-pins/bin/python -m pip install -q -c tests/deploy/sdk-oldest.txt ./client $(SDK_PIN_TEST_DEPS)
	@.sdk-pins/bin/python -m pip list --format=freeze | grep -iE '^(grpcio|grpcio-status|protobuf|googleapis-common-protos|opentelemetry-api)==' | tr '\n' ' '; echo
	cd .sdk-pins && bin/python -W error -c "$(SDK_PIN_IMPORTS)"
	export JOBPULSE_SERVER_PYTHON=$(CURDIR)/$(PY) PYTHONPATH=tests:tests/deploy; \
	  .sdk-pins/bin/python -m pytest -q -p no:cacheprovider -p sdk_pins_plugin --confcutdir=tests/sdk \
	    tests/sdk --ignore=tests/sdk/test_sdk_tracing.py && \
	  .sdk-pins/bin/python -m pytest -q -p no:cacheprovider -p sdk_pins_plugin --confcutdir=tests/e2e \
	    tests/e2e/test_async.py
	@echo "== the SDK's stubs at the newest versions (the dev venv's), imported with warnings as errors"
	cd client && ../$(PY) -W error -c "$(SDK_PIN_IMPORTS)"
	rm -rf .sdk-pins

# Both distributions built (sdist and wheel, into dist/), their metadata and readmes checked by twine.
dist: install
	rm -rf dist
	$(PY) -m build -q --outdir dist client
	$(PY) -m build -q --outdir dist service
	$(VENV)/bin/twine check --strict dist/*
	@ls -l dist/*.whl | awk '{print $$5, $$9}'

# The deploy artefacts' linters: hadolint on the Dockerfile, kubernetes-validate (strict: unknown fields
# fail too) on deploy/kubernetes/. What they run is tested by tests/deploy/test_recipe.py (make test).
check-deploy: install
	$(VENV)/bin/hadolint Dockerfile
	@echo "hadolint: Dockerfile clean"
	$(VENV)/bin/kubernetes-validate --strict deploy/kubernetes/*.yaml

clean:
	rm -rf .gen-check .sdk-check .sdk-pins dist .pytest_cache .mypy_cache .ruff_cache site
