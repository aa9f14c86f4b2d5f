"""Shared fixtures: a real jobpulse server on port 0 over a real SQLite file.

The server runs its own event loop in a background thread, so both the sync
SDK and async tests can talk to it over a real channel.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url
from support.pg_pool import DatabasePool
from support.postgres import POSTGRES_URL

from jobpulse_server.app.wiring import App, create_server
from jobpulse_server.platform.config import Config
from jobpulse_server.services import keys
from jobpulse_server.store.database import SqlStore

T = TypeVar("T")

# Servers started by tests (in-process and child processes alike) take any free HTTP port, never the
# default 8080 that two servers of one test, or a developer's own server, would both want.
os.environ.setdefault("JOBPULSE_HTTP_PORT", "0")


class ServerThread:
    """A jobpulse server in a thread of its own; ``restart()`` keeps the same database."""

    def __init__(self, config: Config, tracer_provider: Any = None) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="jobpulse-test-server", daemon=True
        )
        self._thread.start()
        self.app: App | None = None

    @property
    def port(self) -> int:
        assert self.app is not None
        return self.app.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.app = self.call(create_server(self.config, tracer_provider=self.tracer_provider))
        return self

    def stop(self, drain_seconds: float = 0.0) -> None:
        if self.app is not None:
            self.call(self.app.stop(drain_seconds))
            self.app = None

    def restart(self, same_port: bool = True) -> None:
        """Stops and starts again on the same database (and, by default, the same ports: gRPC and HTTP)."""
        assert self.app is not None
        port, http_port = self.port, self.app.http_port
        self.stop()
        if same_port:
            self.config.port = port
            if http_port is not None:
                self.config.http_port = http_port
        self.start()

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# Which databases the suite runs on: every server-backed test runs once per entry.
DATABASES = [
    d.strip() for d in os.environ.get("JOBPULSE_TEST_DATABASES", "sqlite,postgresql").split(",") if d
]
# The PostgreSQL server tests make their databases on (trust auth; a fresh database per test, copied from
# a template migrated once per session).
# Set (as .ci/run does) to fail instead of skip when PostgreSQL does not answer.
REQUIRE_POSTGRES = os.environ.get("JOBPULSE_REQUIRE_POSTGRES") == "1"


# Tests above the store: the dashboard in a browser, the docs' samples, the SDK, the foreign clients, the
# HTTP side (SSE and the dashboard over the services' iterators), tracing, the RPC fuzzer (its PostgreSQL
# run found nothing the SQLite run did not), and the e2e files whose subject is the SDK's or the CLI's own
# behaviour (batching, signals, the AsyncWorker of the docs, channels). What they hold does not depend on
# the database, and the layers below them are tested on both (conformance, integration, e2e, faults,
# replicas...), so ``make test`` runs them on SQLite only: their PostgreSQL runs are marked
# ``full_matrix``, and ``make test-slow`` runs those too. (This keeps CI within its 20 minutes.)
ABOVE_THE_STORE = ("browser", "docs", "sdk", "clients", "http", "tracing", "fuzz")
CLIENT_SIDE = (
    "e2e/test_worker_batches.py",
    "e2e/test_cli_worker_signals.py",
    "e2e/test_async_worker.py",
    "e2e/test_connections.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = config.rootpath / "tests"
    folders = tuple(str(tests / name) + os.sep for name in ABOVE_THE_STORE)
    files = {str(tests / name) for name in CLIENT_SIDE}
    for item in items:
        params = getattr(item, "callspec", None)
        on_postgres = params is not None and params.params.get("database_url") == "postgresql"
        if on_postgres and (str(item.path).startswith(folders) or str(item.path) in files):
            item.add_marker(pytest.mark.full_matrix)


def _pg_admin(sql: str) -> None:
    import asyncpg

    url = make_url(POSTGRES_URL)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=5,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@functools.cache
def _postgres_problem() -> str | None:
    try:
        _pg_admin("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _pg_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def migrated_template() -> Iterator[Callable[[], str]]:
    """A PostgreSQL database migrated once for the session, which each test's database is copied from
    (CREATE DATABASE ... TEMPLATE: about 0.07 s, where migrating a new database took 0.55-0.9 s, for
    some 450 PostgreSQL tests a run). Made on first use; returns its name."""
    made: list[str] = []

    def name() -> str:
        if not made:
            template = f"jobpulse_template_{uuid.uuid4().hex[:12]}"
            _pg_admin(f'CREATE DATABASE "{template}"')
            made.append(template)

            async def migrate() -> None:
                store = SqlStore(_pg_url(template))
                await store.start()  # runs the migrations, then closes every connection
                await store.close()

            asyncio.run(migrate())
        return made[0]

    yield name
    for template in made:
        _pg_admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_pool() -> Iterator[DatabasePool]:
    """The PostgreSQL databases tests have emptied for later tests (support/pg_pool.py)."""
    pool = DatabasePool(POSTGRES_URL, _pg_url)
    yield pool
    pool.close()


# Tests whose PostgreSQL database is always a fresh copy of the template, dropped afterwards: those that
# break databases on purpose (faults/), and those that read plans or statistics, which the rows an
# emptied database has deleted but not yet vacuumed would change.
FRESH_DATABASE = ("faults/", "integration/test_worker_plans.py", "integration/test_list_plans.py")
FRESH_DATABASE += ("integration/test_total_size.py",)


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """A SQLite file migrated once for the session, which each test's file is copied from (a fresh file
    took 0.12-0.33 s to migrate, a copy a millisecond). Made on first use; returns its path."""
    made: list[Path] = []

    def path() -> Path:
        if not made:
            template = tmp_path_factory.mktemp("template") / "jobpulse.db"

            async def migrate() -> None:
                store = SqlStore(f"sqlite:///{template}")
                await store.start()
                await store.close()  # checkpoints: the file holds everything, no -wal beside it

            asyncio.run(migrate())
            made.append(template)
        return made[0]

    return path


@pytest.fixture(params=DATABASES)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    migrated_template: Callable[[], str],
    migrated_sqlite_file: Callable[[], Path],
    pg_pool: DatabasePool,
) -> Iterator[str]:
    """A fresh database, already migrated unless the test is marked ``empty_database``: a SQLite file
    (copied from ``migrated_sqlite_file``; not yet made when empty), or a PostgreSQL database: one an
    earlier test left and ``pg_pool`` emptied, else a new copy of ``migrated_template``; emptied for a
    later test afterwards, or dropped (always for an empty one, or a test in FRESH_DATABASE)."""
    empty = request.node.get_closest_marker("empty_database") is not None
    if request.param == "sqlite":
        path = tmp_path / "jobpulse.db"
        if not empty:
            shutil.copyfile(migrated_sqlite_file(), path)
        yield f"sqlite:///{path}"
        return
    problem = _postgres_problem()
    if problem is not None:
        message = (
            f"PostgreSQL at {POSTGRES_URL} does not answer ({problem}); start it, or point "
            "JOBPULSE_TEST_POSTGRES_URL at one, or set JOBPULSE_TEST_DATABASES=sqlite to run SQLite only"
        )
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    where = str(request.node.path.relative_to(request.config.rootpath / "tests"))
    reuse = not empty and not where.startswith(FRESH_DATABASE)
    name = pg_pool.take() if reuse else None
    if name is None:
        name = f"jobpulse_test_{uuid.uuid4().hex[:12]}"
        if empty:
            _pg_admin(f'CREATE DATABASE "{name}"')
        else:
            _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template()}"')
    try:
        yield _pg_url(name)
    finally:
        if reuse:
            pg_pool.give_back(name, migrated_template())
        else:
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_server(database_url: str) -> Iterator[Callable[..., ServerThread]]:
    """Starts servers with config overrides, e.g. ``make_server(heartbeat_interval=0.2)``
    (``tracer_provider=``: the OpenTelemetry provider the server traces through)."""
    started: list[ServerThread] = []

    def make(tracer_provider: Any = None, **overrides: Any) -> ServerThread:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "database_url": database_url,
            "drain_seconds": 0.0,
            "http_port": 0,
        }
        values.update(overrides)
        srv = ServerThread(Config(**values), tracer_provider).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.close()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    """A running server with default settings on a fresh SQLite file."""
    return make_server()


@pytest.fixture
def make_keyed(
    make_server: Callable[..., ServerThread],
) -> Callable[..., tuple[ServerThread, dict[str, str]]]:
    """Starts a server (config overrides as ``make_server``) with API keys alice and bob (client), root
    (admin) and w (worker), in force once it returns: (server, the key of each name)."""

    def make(**overrides: Any) -> tuple[ServerThread, dict[str, str]]:
        srv = make_server(**overrides)
        made = {
            name: srv.call(keys.create_key(srv.app.db, name, role))
            for name, role in (("alice", "client"), ("bob", "client"), ("root", "admin"), ("w", "worker"))
        }
        srv.call(srv.app.auth.refresh())
        return srv, made

    return make
