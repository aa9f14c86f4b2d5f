"""Server wiring: database, change hub, services, servicers, health, reflection, sweeper, shutdown.

``create_server(config)`` starts everything on ``config.port`` (0 picks a free port)
and returns a running ``App``; ``run(config)`` serves until SIGTERM/SIGINT, drains,
and returns the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.longrunning import operations_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc

from jobpulse.v1 import (
    admin_service_pb2_grpc,
    job_service_pb2_grpc,
    schedule_service_pb2_grpc,
    worker_service_pb2_grpc,
)
from jobpulse_server.api.admin import AdminServicer
from jobpulse_server.api.encoded_jobs import EncodedJobs
from jobpulse_server.api.health import SERVICE_NAMES, ServerHealth, job_gauges
from jobpulse_server.api.interceptors import CallGuard
from jobpulse_server.api.jobs import JobServicer
from jobpulse_server.api.operations import SERVICE_NAME as OPERATIONS_SERVICE
from jobpulse_server.api.operations import OperationsServicer
from jobpulse_server.api.reflection import add_reflection, record_services
from jobpulse_server.api.schedules import ScheduleServicer
from jobpulse_server.api.tracing import RpcSpans
from jobpulse_server.api.workers import WorkerServicer
from jobpulse_server.app.startup import configure_logging, open_mode_problem, safe_url, tls_credentials
from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.events.pg_listener import Listener
from jobpulse_server.http.auth import HttpAuth
from jobpulse_server.http.dashboard import Dashboard, Extras
from jobpulse_server.http.json_api import SSE_METHODS, JsonApi
from jobpulse_server.http.routes import HttpSide
from jobpulse_server.http.server import HttpServer
from jobpulse_server.http.session import Sessions
from jobpulse_server.http.sse import watch_form as sse_watch_form
from jobpulse_server.http.tracing import TracedHttp
from jobpulse_server.platform import gc_tuning
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.logs import Observer, stamp_trace_ids
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.platform.tracing import OFF, StoreSpans, Tracing, tracing_for, tracing_from_environment
from jobpulse_server.services import auth
from jobpulse_server.services.auth import Authenticator, is_loopback
from jobpulse_server.services.bulk import BulkService
from jobpulse_server.services.events_tokens import EventsTokens
from jobpulse_server.services.jobs import JobService
from jobpulse_server.services.kinds import KindService
from jobpulse_server.services.latency import Latency
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from jobpulse_server.services.retention import RetentionService, retention_of
from jobpulse_server.services.schedules import ScheduleService
from jobpulse_server.services.throughput import Throughput
from jobpulse_server.services.usage import UsageLedger
from jobpulse_server.services.waiting import JobWaiter
from jobpulse_server.services.watch import FeedService, WatchService
from jobpulse_server.services.webhooks import Deliverer, WebhookService, check_server_secret
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.diagnose import CannotOpenDatabase, startup_problem
from jobpulse_server.wire import http_rules
from jobpulse_server.wire.convert import webhook_job
from jobpulse_server.wire.watch import feed_encoder, watch_encoder

log = logging.getLogger("jobpulse")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# The methods grpc serves as registered methods (each with a request of its own pending in the core): the
# ones workers, watchers and pages call all the time. Every other method is served through its service's
# generic handler (api/interceptors.GuardedServer says why). Against every method registered (27), claim
# + complete ran 3.3% and claim, then complete 1.8% more chunks a second on SQLite, 21 us less server
# CPU a chunk (bench.compare, 4 rounds, when it was measured).
REGISTERED_METHODS = frozenset(
    f"/jobpulse.v1.{method}"
    for method in (
        "WorkerService/ClaimChunks",
        "WorkerService/ReportChunkProgress",
        "WorkerService/CompleteChunk",
        "WorkerService/CompleteChunks",
        "WorkerService/FailChunk",
        "JobService/CreateJob",
        "JobService/GetJob",
        "JobService/BatchGetJobs",
        "JobService/ListJobs",
        "JobService/WatchJob",
    )
)


@dataclass
class App:
    """A running server and the parts tests may want to reach."""

    config: Config
    server: grpc.aio.Server
    port: int
    db: SqlStore
    hub: ChangeHub
    jobs: JobService
    workers: WorkerService
    health: ServerHealth
    auth: Authenticator
    metrics: Metrics
    usage: UsageLedger
    metrics_port: int | None = None
    http: HttpServer | None = None
    tokens: EventsTokens | None = None
    listener: Listener | None = None
    deliverer: Deliverer | None = None
    throughput: Throughput | None = None
    # The schedules and their ticker (tests call its one pass, ``tick(now)``, with a time of their own).
    schedules: ScheduleService | None = None
    bulk: BulkService | None = None
    tracing: Tracing = OFF
    # The gRPC server's interceptors: RpcSpans when tracing is on, else none (the CallGuard wraps the
    # handlers themselves).
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    _stop_background: asyncio.Event = field(default_factory=asyncio.Event)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def store(self) -> SqlStore:
        """The store (the same object as ``db``)."""
        return self.db

    @property
    def tracer(self) -> Any:
        """The server's tracer (``opentelemetry.trace.Tracer``; a no-op one when tracing is off)."""
        return self.tracing.tracer

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def http_port(self) -> int | None:
        """The HTTP side's port (None when it is off)."""
        return self.http.port if self.http is not None else None

    @property
    def http_url(self) -> str | None:
        """The HTTP side's base URL, e.g. ``http://127.0.0.1:8080`` (None when it is off)."""
        if self.http is None:
            return None
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{shown}:{self.http.port}"

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Drains: stops taking calls, gives in-flight ones ``drain_seconds``, ends streams
        with UNAVAILABLE, then closes the database."""
        grace = self.config.drain_seconds if drain_seconds is None else drain_seconds
        self._stop_background.set()
        await self.health.set_serving(False)
        stopping = asyncio.ensure_future(self.server.stop(grace + 1.0))
        if self.hub.open_streams and grace > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), timeout=grace)
        self.hub.close()  # ends every watch stream, gRPC and SSE alike
        if self.http is not None:
            await self.http.stop()
        await stopping
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.usage.close()  # the calls counted since the last flush, now that none come in
        if self.throughput is not None:
            await self.throughput.close()  # likewise the chunks completed during the drain
        await self.db.close()
        await self.tracing.close()  # the spans still batched, exported


def keepalive_options(config: Config) -> list[tuple[str, int]]:
    """HTTP/2 keepalive and connection ageing (docs/behaviour.md, "Connections")."""
    out = [
        # Pings on idle connections keep a quiet watch stream alive through proxies and NATs that
        # drop connections silent for a minute or more, and find dead peers.
        ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients may ping this often (the SDK pings every 30 s) without being told to go away.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if config.max_connection_age > 0:
        # Connections are closed (GOAWAY) after this age, so clients reconnect and spread over the
        # replicas behind a load balancer; calls under way get the grace period to finish, and the
        # SDK's streams resume from where they were.
        out += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace * 1000)),
        ]
    return out


async def create_server(config: Config, *, clock: Clock = now_us, tracer_provider: Any = None) -> App:
    """Starts a jobpulse server for ``config`` (port 0: any free port) and returns it running.

    ``tracer_provider``: the OpenTelemetry tracer provider the server traces through (tests pass an
    SDK provider with an in-memory exporter); None: tracing as the ``OTEL_*`` variables say
    (platform/tracing.py), off unless they ask for it."""
    check_server_secret(config)
    tracing = tracing_from_environment() if tracer_provider is None else tracing_for(tracer_provider)
    started = time.time()
    hub = ChangeHub()
    metrics = Metrics()
    metrics.exemplars = tracing.on  # exemplars are trace ids: none to look up when the server does not trace
    metrics.open_streams.set_function(lambda: hub.open_streams)
    # The least time between a job's job.progress webhook events: the outbox writes them, and the
    # PostgreSQL worker path leaves to it the changes that make one.
    progress_us = int(config.webhook_progress_interval * 1e6)
    db = SqlStore(
        config.database_url,
        on_commit=hub.publish,
        on_wake=hub.notify_work_later,
        sqlite_on_loop=config.sqlite_on_loop,
        on_retry=lambda sqlstate: metrics.db_retries.labels(sqlstate).inc(),
        progress_interval_us=progress_us,
        fair_share=config.fair_share == "owner",
    )
    try:
        await db.start()
    except Exception as exc:
        await db.close()
        problem = startup_problem(exc, config.database_url)
        if problem is None:
            raise
        raise CannotOpenDatabase(problem) from exc
    if tracing.on:
        db.spans = StoreSpans(tracing.tracer, db.kind)
        stamp_trace_ids()
        log.info("tracing on: spans exported to %s", tracing.where)
    retention = retention_of(config)
    outbox = Outbox(functools.partial(webhook_job, retention=retention), progress_us)
    latency = Latency(metrics)
    jobs = JobService(db, outbox, config, clock, latency, tracer=tracing.tracer)
    kinds = KindService(db, clock)
    bulk = BulkService(db, jobs, clock, batch_size=config.bulk_batch_size)
    observer = Observer(metrics)
    throughput = Throughput(db, clock)
    workers = WorkerService(
        db, hub, outbox, config, clock, metrics, throughput=throughput, tracer=tracing.tracer
    )
    watches = WatchService(db, hub, config, watch_encoder(clock, retention), metrics, clock)
    # The HTTP side's SSE text of each watch message, built from its gRPC form, once for every stream.
    watches.add_form("sse", sse_watch_form(watches.wire("grpc")))
    feeds = FeedService(db, hub, config)

    rates = {
        "client": config.rate_limit_client,
        "worker": config.rate_limit_worker,
        "admin": config.rate_limit_admin,
    }
    usage = UsageLedger(db, clock)
    limiter: Limiter
    if db.batch is not None and config.rate_limit_shared:
        limiter = SharedRateLimiter(rates, usage, db.batch, config.rate_limit_lease_seconds)
    else:
        limiter = RateLimiter(rates, usage)
    authenticator = Authenticator(db, limiter, refresh_seconds=config.key_refresh_interval)
    await authenticator.refresh()
    schedules = ScheduleService(db, jobs, config, clock, key_named=authenticator.principal_named)
    tokens = EventsTokens(db, authenticator, clock)
    await tokens.start()
    problem = open_mode_problem(config, not authenticator.open)
    if problem is not None:
        await db.close()
        raise PermissionError(problem)
    roles = {
        SERVICE_NAMES[0]: JobServicer.ROLES,
        SERVICE_NAMES[1]: WorkerServicer.ROLES,
        SERVICE_NAMES[2]: AdminServicer.ROLES,
        f"{SERVICE_NAMES[2]}/GetUsage": AdminServicer.USAGE_ROLES,
        **{f"{SERVICE_NAMES[0]}/{m}": auth.ADMIN_ROLES for m in JobServicer.ADMIN_METHODS},
        f"{SERVICE_NAMES[0]}/ListKinds": JobServicer.KINDS_ROLES,
        SERVICE_NAMES[3]: ScheduleServicer.ROLES,
        # google.longrunning over the same jobs: authenticated, owner-scoped and mapped the same way.
        OPERATIONS_SERVICE: OperationsServicer.ROLES,
    }
    # The guard wraps each method of the services in ``roles`` as its servicer is added (guarded, below):
    # a call reaches it with no interceptor in between. Tracing off: no interceptor at all, so a call
    # costs what it cost before tracing existed; on: RpcSpans, whose span covers the guard.
    guard = CallGuard(authenticator, observer, roles)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if tracing.on:
        interceptors.append(RpcSpans(tracing.tracer, roles))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # Calls that arrived but are not yet taken up by the event loop. gRPC's own limits
            # (1,000, hard 3,000) refused streams beyond about 3,000 when thousands of watchers
            # connected at once (a restart): see docs/behaviour.md, "Watch".
            ("grpc.server.max_pending_requests", config.max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", 2 * config.max_pending_calls),
            *keepalive_options(config),
        ],
    )
    encoded = EncodedJobs(
        config.encoded_cache_bytes, retention=retention, idle_seconds=config.encoded_cache_idle_seconds
    )
    metrics.watch_cache("encoded_cache", "the cache of encoded jobs", encoded)
    if db.batch is not None:
        metrics.watch_group_commit(db.batch.group)
    # Every service added to the server from here on is listed by reflection, which reads this list.
    served = record_services(server)
    guarded = guard.server(server, REGISTERED_METHODS)
    job_service_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(
            jobs,
            watches,
            feeds,
            WebhookService(db, clock),
            clock,
            encoded,
            tokens,
            kinds,
            bulk,
            retention,
        ),
        guarded,
    )
    operations_pb2_grpc.add_OperationsServicer_to_server(
        OperationsServicer(jobs, JobWaiter(jobs, hub), clock, bulk, retention), guarded
    )
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(workers, clock, config.artifact_schemes), guarded
    )
    schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(
        ScheduleServicer(schedules, clock, retention), guarded
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, guarded)
    stop_background = asyncio.Event()
    server_health = ServerHealth(db, hub, workers, health_servicer, config, stop_background)
    admin = AdminServicer(usage, server_health.report)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(admin, guarded)
    add_reflection(server, served)
    try:
        address = f"{config.host}:{config.port}"
        if config.tls_cert or config.tls_key:
            port = server.add_secure_port(address, tls_credentials(config))
        else:
            port = server.add_insecure_port(address)
    except (RuntimeError, OSError, ValueError) as exc:
        await db.close()
        raise OSError(f"cannot listen on {config.host}:{config.port}: {_listen_problem(exc)}") from exc
    http: HttpServer | None = None
    if config.http_port >= 0:
        sessions = Sessions(authenticator, tokens, secure=bool(config.tls_cert))
        dashboard = Dashboard(
            jobs,
            WebhookService(db, clock),
            usage,
            sessions,
            Extras(server_health.report, server_health.leases, workers.workers_seen, started),
            clock,
            kinds,
            throughput,
            schedules,
            bulk,
        )
        side = HttpSide(
            watches,
            feeds,
            HttpAuth(authenticator, tokens, sessions),
            feed_encoder(clock, retention),
            lambda: server_health.serving,
            lambda: hub.outage,
            metrics.registry,
            config.cors_origins,
            dashboard,
            JsonApi(http_rules.served_rules(), guard.handler, skip=SSE_METHODS),
        )
        asgi: Any = side.app()
        if tracing.on:
            asgi = TracedHttp(asgi, tracing.tracer)
        http = HttpServer(
            asgi,
            config.host,
            config.http_port,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
            header_timeout=config.http_header_timeout,
            stall_timeout=config.http_stall_timeout,
            drain_seconds=config.drain_seconds,
        )
        try:
            await http.start()
        except OSError as exc:
            await server.stop(0)
            await db.close()
            raise OSError(
                f"cannot listen on {config.host}:{config.http_port} (HTTP side): {exc.strerror or exc}; "
                "choose another --http-port / JOBPULSE_HTTP_PORT, 0 for any free port, or -1 for none"
            ) from exc
    await server.start()

    deliverer = Deliverer(db, hub, config, clock, metrics=metrics)
    # Bulk deletes: on SQLite their statements run on a worker thread, off the event loop.
    expiry = RetentionService(db, config, clock)
    listener = Listener(db.url, hub, db.replica_id) if db.kind == "postgresql" else None
    metrics_port = metrics.serve(config.host, config.metrics_port) if config.metrics_port >= 0 else None
    app = App(
        config,
        server,
        port,
        db,
        hub,
        jobs,
        workers,
        server_health,
        authenticator,
        metrics,
        usage,
        metrics_port=metrics_port,
        http=http,
        tokens=tokens,
        listener=listener,
        deliverer=deliverer,
        throughput=throughput,
        schedules=schedules,
        bulk=bulk,
        tracing=tracing,
        interceptors=interceptors,
        _stop_background=stop_background,
    )
    # The background tasks, each ending when stop_background is set (App.stop).
    background = [
        (workers.run_sweeper(stop_background), "jobpulse-sweeper"),
        (expiry.run(stop_background), "jobpulse-expiry"),
        (authenticator.run(stop_background), "jobpulse-keys"),
        (deliverer.run(stop_background), "jobpulse-webhooks"),
        (server_health.watch_database(), "jobpulse-db-health"),
        (usage.run(stop_background, config.usage_flush_interval), "jobpulse-usage"),
        (throughput.run(stop_background, config.usage_flush_interval), "jobpulse-throughput"),
        (tokens.run(stop_background, config.key_refresh_interval), "jobpulse-events-secrets"),
        (schedules.run(stop_background), "jobpulse-schedules"),
        (bulk.run(stop_background), "jobpulse-bulk"),
    ]
    if metrics_port is not None:
        background.append((job_gauges(db, metrics, stop_background), "jobpulse-job-gauges"))
    if listener is not None:
        background.append((listener.run(stop_background), "jobpulse-listener"))
    await server_health.set_serving(True)
    app._background.extend(asyncio.create_task(coro, name=name) for coro, name in background)
    gc_tuning.tune(config.gc_threshold)
    return app


async def serve(config: Config) -> int:
    """Serves until SIGTERM or SIGINT, then drains. Returns the process exit code."""
    try:
        app = await create_server(config)
    except (CannotOpenDatabase, OSError, ValueError) as exc:  # PermissionError is an OSError
        log.error("cannot start: %s", exc)
        return 2
    log.info(
        "jobpulse serving on %s%s (database %s)%s",
        app.address,
        " with TLS" if config.tls_cert else "",
        safe_url(config.database_url),
        # The port the metrics got (with --metrics-port 0, any free one: this says which).
        f"; metrics on http://{config.host}:{app.metrics_port}/metrics"
        if app.metrics_port is not None
        else "",
    )
    if app.http_url is not None:
        log.info("dashboard on %s/ (and events under /v1/, /healthz, /readyz, /metrics)", app.http_url)
    if app.auth.open:
        log.warning(
            "open mode: no API keys exist, so every caller is an anonymous admin%s",
            "" if is_loopback(config.host) else " (--insecure on a non-loopback address)",
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.1fs", config.drain_seconds)
    await app.stop()
    log.info("stopped")
    return 0


def run(config: Config) -> int:
    """Blocking entry point used by ``jobpulse serve``."""
    listener = configure_logging(config)
    try:
        return asyncio.run(serve(config))
    finally:
        listener.stop()


def _listen_problem(exc: BaseException) -> str:
    """What went wrong binding the port, in words: gRPC says only "Failed to bind to address ...; set
    GRPC_VERBOSITY=debug ..." (its log line above says why, for those who read logs)."""
    text = str(exc)
    if "Failed to bind" in text or "Failed to add port" in text:
        return (
            "the port is in use, or the address is not one of this machine's "
            "(another server running? choose another --port / JOBPULSE_PORT, or 0 for any free port)"
        )
    return text
