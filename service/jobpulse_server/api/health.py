"""The server's health: the grpc health statuses, which follow a database probe, and the detailed
report behind AdminService.GetServerHealth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil

from grpc_health.v1 import health, health_pb2

from jobpulse.v1 import admin_service_pb2, job_service_pb2, schedule_service_pb2, worker_service_pb2
from jobpulse_server.domain.clock import now_us
from jobpulse_server.domain.errors import UNAVAILABLE_MESSAGE, DatabaseUnavailable
from jobpulse_server.domain.model import JobState
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.schema import sqlite_path

log = logging.getLogger("jobpulse")

SERVICE_NAMES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
)
# Every service health answers for (google.longrunning.Operations is served over the same jobs).
HEALTH_NAMES = (*SERVICE_NAMES, "google.longrunning.Operations")
# Probes in a row that must time out before a silent database is reported down.
SLOW_PROBES_BEFORE_DOWN = 3
SILENT_MESSAGE = "the database does not answer; retry shortly"


class ServerHealth:
    """Owns the serving flag: sets the grpc health statuses, probes the database until ``stop`` is
    set, and builds the detailed report."""

    def __init__(
        self,
        db: SqlStore,
        hub: ChangeHub,
        workers: WorkerService,
        statuses: health.aio.HealthServicer,
        config: Config,
        stop: asyncio.Event,
    ) -> None:
        self.db = db
        self.hub = hub
        self.workers = workers
        self.statuses = statuses
        self.config = config
        self.stop = stop
        self.serving = False

    async def report(self) -> admin_service_pb2.GetServerHealthResponse:
        """The detail behind grpc health: database, schema, sweeper, outbox, streams, disk."""
        out = admin_service_pb2.GetServerHealthResponse(
            database_kind=self.db.kind, open_streams=self.hub.open_streams, serving=self.serving
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self.db.read() as tx:
                await tx.probe()
                out.schema_version = await tx.schema_version()
                pending, oldest_due = await tx.outbox_backlog(now_us())
            out.database_reachable = True
            out.database_latency.FromNanoseconds(int((loop.time() - started) * 1e9))
            out.outbox_pending = pending
            if oldest_due is not None:
                out.outbox_lag.FromNanoseconds(max(0, now_us() - oldest_due) * 1000)
        except Exception as exc:
            log.warning("health report: database unreachable: %s", exc)
        if self.workers.last_sweep is not None:
            out.sweeper_lag.FromNanoseconds(int((loop.time() - self.workers.last_sweep) * 1e9))
        if self.db.kind == "sqlite":
            path = sqlite_path(self.db.url)
            folder = await asyncio.to_thread(lambda: os.path.dirname(os.path.abspath(path)))
            out.free_disk_bytes = (await asyncio.to_thread(shutil.disk_usage, folder)).free
        return out

    async def leases(self) -> tuple[int, int]:
        """Chunks under a lease now, and the workers holding them (the lease index answers it)."""
        async with self.db.read() as tx:
            return await tx.leases_in_flight()

    async def set_serving(self, serving: bool) -> None:
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *HEALTH_NAMES):
            await self.statuses.set(name, status)

    async def probe(self) -> None:
        """Raises unless the database answers and holds every table and column the server uses."""
        await self.db.probe()

    async def watch_database(self) -> None:
        """Probes the database; grpc health says NOT_SERVING while it cannot be reached or lacks the
        schema, and the hub ends open streams then (they wait on the hub, not on the database)."""
        serving = True
        slow = 0
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=self.config.health_interval)
                return
            except asyncio.TimeoutError:
                pass
            limit = max(1.0, self.config.health_interval)
            why = SILENT_MESSAGE
            try:
                await asyncio.wait_for(self.probe(), timeout=limit)
                ok, slow = True, 0
            except asyncio.TimeoutError:
                # A busy server answers late; only a database that stays silent is reported down,
                # so that load alone does not make health flap.
                slow += 1
                ok = slow < SLOW_PROBES_BEFORE_DOWN
                if not ok and serving:
                    log.error(
                        "database did not answer %d probes in a row (%.0fs each): health is NOT_SERVING "
                        "until it does",
                        slow,
                        limit,
                    )
            except Exception as exc:
                ok = False
                why = exc.message if isinstance(exc, DatabaseUnavailable) else UNAVAILABLE_MESSAGE
                if serving:
                    log.error(
                        "database unusable: %s (%r): health is NOT_SERVING until it is back",
                        why,
                        exc.__cause__ or exc,  # the driver's own error, for the operator
                    )
            if ok != serving and not self.stop.is_set():
                serving = ok
                if ok:
                    log.info("database reachable again: health is SERVING")
                    self.hub.database_back()
                    await self.set_serving(True)
                else:
                    # Health first: a watcher whose stream ends finds health saying the same.
                    await self.set_serving(False)
                    self.hub.database_lost(why)


async def job_gauges(db: SqlStore, metrics: Metrics, stop: asyncio.Event, every: float = 5.0) -> None:
    """Refreshes the jobs-by-state gauge every ``every`` seconds until ``stop`` is set (for /metrics)."""
    while not stop.is_set():
        try:
            async with db.read() as tx:
                counts = await tx.count_by_state()
            for state in JobState:
                metrics.jobs.labels(state.name).set(counts.get(state, 0))
        except Exception:
            log.debug("could not count jobs for metrics", exc_info=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
