"""The server's Prometheus metrics (text on --metrics-port), in a registry of its own per server."""

from __future__ import annotations

import bisect
import time
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Chunk and job latencies: work that takes from a fraction of a second to hours (10 ms .. 6 h).
WORK_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0,
)  # fmt: skip
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20, 50, 100)
# Distinct job kinds the latency metrics label, first come first labelled; later kinds count as "other",
# so callers inventing kinds cannot grow the metrics without end.
MAX_KINDS = 50
OTHER_KIND = "other"


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (one per server)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpcs = Counter(
            "jobpulse_rpcs", "RPCs handled, by method and status code", ["method", "code"], registry=r
        )
        self.rpc_seconds = Histogram(
            "jobpulse_rpc_duration_seconds",
            "RPC latency by method and status code (streams: their whole life)",
            ["method", "code"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge(
            "jobpulse_jobs", "Jobs by state (refreshed every few seconds)", ["state"], registry=r
        )
        self.chunks = Counter(
            "jobpulse_chunks",
            "Chunk events: claimed, completed, failed, retried, rescued, cancelled",
            ["event"],
            registry=r,
        )
        self.open_streams = Gauge(
            "jobpulse_open_streams",
            "Open watch streams: WatchJob and WatchJobs, and their SSE forms on the HTTP side",
            registry=r,
        )
        self.webhooks = Counter(
            "jobpulse_webhook_deliveries",
            "Webhook attempts by outcome: delivered, failed",
            ["outcome"],
            registry=r,
        )
        self.webhooks_dead = Counter("jobpulse_webhook_dead", "Webhook deliveries given up on", registry=r)
        self.db_retries = Counter(
            "jobpulse_db_retries",
            "Write transactions run again after a deadlock or serialization failure, by SQLSTATE",
            ["sqlstate"],
            registry=r,
        )

        self.queue_wait = LoopHistogram(
            "jobpulse_chunk_queue_wait_seconds",
            "Chunk claimable (created, retry due, lease expired) -> claimed, by job kind",
            ["kind"],
            buckets=WORK_BUCKETS,
            registry=r,
        )
        self.chunk_run = LoopHistogram(
            "jobpulse_chunk_run_seconds",
            "Chunk claimed -> completed or failed by its worker, by job kind and outcome",
            ["kind", "outcome"],
            buckets=WORK_BUCKETS,
            registry=r,
        )
        self.chunk_attempts = LoopHistogram(
            "jobpulse_chunk_attempts",
            "Attempts a chunk took, observed when it ends completed or failed for good, by job kind",
            ["kind"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.job_duration = LoopHistogram(
            "jobpulse_job_duration_seconds",
            "Job created -> terminal, by job kind and terminal state",
            ["kind", "state"],
            buckets=WORK_BUCKETS,
            registry=r,
        )
        self.watch_delivery = LoopHistogram(
            "jobpulse_watch_delivery_seconds",
            "A job change's time -> its message handed to a watch stream, by transport (grpc, sse)",
            ["transport"],
            buckets=_BUCKETS,
            registry=r,
        )
        # The kinds labelled so far (bounded: MAX_KINDS, then "other").
        self._kinds: set[str] = set()
        # Whether observations look for a trace id to attach (the server turns this off when it does not
        # trace: the lookup was a fifth of an observation's cost, paid per stream per change by WatchJob).
        self.exemplars = True

    def kind_label(self, kind: str) -> str:
        """``kind`` if it is one of the first MAX_KINDS kinds seen, else "other"."""
        if kind in self._kinds:
            return kind
        if len(self._kinds) < MAX_KINDS:
            self._kinds.add(kind)
            return kind
        return OTHER_KIND

    def observe_queue_wait(self, kind: str, seconds: float) -> None:
        self.queue_wait.labels(self.kind_label(kind)).observe(seconds, self._exemplar())

    def observe_chunk_run(self, kind: str, outcome: str, seconds: float) -> None:
        self.chunk_run.labels(self.kind_label(kind), outcome).observe(seconds, self._exemplar())

    def observe_attempts(self, kind: str, attempts: int) -> None:
        self.chunk_attempts.labels(self.kind_label(kind)).observe(attempts, self._exemplar())

    def observe_job_duration(self, kind: str, state: str, seconds: float) -> None:
        self.job_duration.labels(self.kind_label(kind), state).observe(seconds, self._exemplar())

    def watch_delivery_child(self, transport: str) -> LoopChild:
        """The watch-delivery histogram of one transport, for a stream to observe its messages into (one
        lookup per stream, not per message)."""
        return self.watch_delivery.labels(transport)

    def observe_watch_delivery(self, transport: str, seconds: float) -> None:
        self.watch_delivery.labels(transport).observe(seconds, self._exemplar())

    def _exemplar(self) -> dict[str, str] | None:
        return exemplar() if self.exemplars else None

    def watch_cache(self, name: str, what: str, cache: Any) -> None:
        """Exposes a cache's ``bytes_held``, ``entries``, ``hits``, ``misses`` and ``evictions`` (plain
        attributes it keeps, read only when scraped) as jobpulse_<name>_bytes / _entries gauges and
        _hits / _misses / _evictions counters."""
        self.registry.register(_CacheCollector(name, what, cache))

    def watch_group_commit(self, group: Any) -> None:
        """Exposes the PostgreSQL group-commit flusher's ``flushes``, ``items``, ``busy_seconds`` and
        ``queued`` (read only when scraped) as jobpulse_group_commit_* counters and a gauge."""
        self.registry.register(_GroupCommitCollector(group))

    def serve(self, host: str, port: int) -> int:
        """Serves /metrics on a thread of its own; returns the port (0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


class LoopChild:
    """One label set of a ``LoopHistogram``: counts per bucket, their sum, and the last exemplar of each."""

    __slots__ = ("bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.total = 0.0
        self.exemplars: list[Exemplar | None] | None = None

    def observe(self, value: float, exemplar: dict[str, str] | None = None) -> None:
        i = bisect.bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.total += value
        if exemplar is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[i] = Exemplar(exemplar, value, time.time())


class LoopHistogram:
    """A labelled Prometheus histogram observed from the event loop's thread only: an observation is a
    bisect and two additions, with no lock. (prometheus_client's Histogram takes a lock per observation;
    with the exemplar lookup that was about 4 us, which WatchJob paid for every stream at every change: 20
    ms of CPU per change at 5,000 streams.) /metrics reads it from another thread: a scrape may miss an
    observation made meanwhile, and its count is always the sum of its buckets."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: list[str],
        *,
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], LoopChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LoopChild(self.bounds)
        return child

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [*(floatToGoString(b) for b in self.bounds), "+Inf"]
        for values, child in list(self._children.items()):
            counts, total, marks = list(child.counts), child.total, child.exemplars
            marks = list(marks) if marks is not None else [None] * len(counts)
            buckets: list[Any] = []
            running = 0
            for le, n, mark in zip(les, counts, marks, strict=True):
                running += n
                buckets.append((le, running) if mark is None else (le, running, mark))
            family.add_metric(list(values), buckets, total)
        return [family]


def exemplar() -> dict[str, str] | None:
    """The current span's trace id as an exemplar, when a sampled span is current (tracing on); None
    otherwise. Exemplars show only in the OpenMetrics format (Accept: application/openmetrics-text)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid and ctx.trace_flags.sampled:
        return {"trace_id": format(ctx.trace_id, "032x")}
    return None


class _CacheCollector:
    """Reads a cache's own counts when /metrics is scraped (nothing on the path of a call)."""

    def __init__(self, name: str, what: str, cache: Any) -> None:
        self.name = name
        self.what = what
        self.cache = cache

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c, n = self.cache, f"jobpulse_{self.name}"
        yield GaugeMetricFamily(f"{n}_bytes", f"Memory {self.what} takes (its entries' cost)", c.bytes_held)
        yield GaugeMetricFamily(f"{n}_entries", f"Entries {self.what} holds", c.entries)
        yield CounterMetricFamily(f"{n}_hits", f"Reads {self.what} answered", c.hits)
        yield CounterMetricFamily(f"{n}_misses", f"Reads {self.what} could not answer", c.misses)
        yield CounterMetricFamily(f"{n}_evictions", f"Entries {self.what} dropped for room", c.evictions)
        if hasattr(c, "expired"):
            yield CounterMetricFamily(
                f"{n}_expired", f"Entries {self.what} dropped unread for long", c.expired
            )


class _GroupCommitCollector:
    """Reads the group-commit flusher's own counts when /metrics is scraped (nothing on a flush's path
    beyond two additions and a clock read)."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        g = self.group
        yield CounterMetricFamily(
            "jobpulse_group_commit_flushes",
            "Statements the group-commit flusher wrote "
            "(PostgreSQL: claims, completions, progress reports, retries)",
            g.flushes,
        )
        yield CounterMetricFamily(
            "jobpulse_group_commit_written",
            "Completions, claimed chunks, progress reports and retries the group-commit flusher wrote",
            g.items,
        )
        yield CounterMetricFamily(
            "jobpulse_group_commit_busy_seconds",
            "Seconds the group-commit flusher spent on its statements; a rate near 1 means claims, "
            "completions, progress reports and retries wait for it",
            g.busy_seconds,
        )
        yield GaugeMetricFamily(
            "jobpulse_group_commit_queued",
            "Claims, completions, progress reports and retries waiting for the next flush",
            g.queued,
        )
