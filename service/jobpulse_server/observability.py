"""Metrics (Prometheus text on --metrics-port) and one log line per RPC (text or JSON)."""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import logging
import threading
import time
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

rpc_log = logging.getLogger("jobpulse.rpc")

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


class LogWriter:
    """Formats and writes log records on a thread of its own, a batch at a time.

    Handing each record to a writer thread as it came (a queue and a listener thread) woke that
    thread once per record, and on the 2-core VMs this project is measured on a thread wake-up
    costs 150-250 us: with the access log on (the default level), that was about 150 us of server
    CPU per call, a quarter of a GetJob. Here the event loop only appends the record to a deque;
    the thread wakes every ``interval`` seconds (or at once for WARNING and above), formats what
    has gathered and writes it to the handler's stream in one write. Access-log lines therefore
    appear up to ``interval`` late; nothing is lost at ``stop``.
    """

    def __init__(self, handler: logging.StreamHandler[Any], interval: float = 0.05) -> None:
        self.handler = handler
        self.interval = interval
        # Log records, and access-log entries (``put_access``) made into records here, in arrival order.
        self._records: collections.deque[logging.LogRecord | tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobpulse-log-writer", daemon=True)
        self._thread.start()

    def put(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def put_access(self, entry: tuple[Any, ...]) -> None:
        """An access-log line's values (``Observer.record``), made into its record on this writer's
        thread: the same record, formatted by the same formatter, for a deque append on the loop."""
        self._records.append(entry)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        lines = []
        while self._records:
            item = self._records.popleft()
            record = item if isinstance(item, logging.LogRecord) else access_record(*item)
            try:
                lines.append(self.handler.format(record))
            except Exception:
                self.handler.handleError(record)
        if not lines:
            return
        with self.handler.lock or contextlib.nullcontext():
            try:
                self.handler.stream.write("\n".join(lines) + "\n")
                self.handler.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: nothing else to write to

    def stop(self) -> None:
        """Writes what is left and ends the thread."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(5)


class HandOff(logging.Handler):
    """The root logger's handler: gives each record to the LogWriter as it is."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self.writer.put(record)


class DriverNoise(logging.Filter):
    """Folds the traceback of the database driver's own log records into their one line.

    asyncpg's pool logs "Failed to restore the pool connection floor; retrying" with a full traceback
    each time it cannot reconnect while the database is away: the same pages again and again, where the
    server's own lines already say what is wrong and what to do. The exception's words stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("asyncpg") and record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {' '.join(str(exc).split())}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def log_off_the_loop(handler: logging.StreamHandler[Any], level: int) -> LogWriter:
    """Routes the root logger through ``HandOff`` to a LogWriter over ``handler``; returns the
    started writer (stop it to flush)."""
    global _hand_off
    writer = LogWriter(handler)
    hand_off = HandOff(writer)
    hand_off.addFilter(DriverNoise())
    logging.basicConfig(level=level, handlers=[hand_off], force=True)
    _hand_off = hand_off
    return writer


_hand_off: HandOff | None = None


def _access_writer() -> LogWriter | None:
    """The LogWriter an access-log line can be handed to as bare values: when the server's ``HandOff``
    is the only place records of ``jobpulse.rpc`` go (no other handler or filter on the way, records
    made by the standard factory). Anything else (a test's log capture, tracing's stamped records, a
    logging set-up of an embedding program) takes the standard way, through ``Logger.handle``."""
    hand_off = _hand_off
    if hand_off is None or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    root = logging.root
    if len(root.handlers) != 1 or root.handlers[0] is not hand_off or root.filters:
        return None
    if hand_off.level > logging.INFO or not all(isinstance(f, DriverNoise) for f in hand_off.filters):
        return None
    logger: logging.Logger | None = rpc_log
    while logger is not None and logger is not root:
        if logger.handlers or logger.filters or not logger.propagate or logger.disabled:
            return None
        logger = logger.parent
    return hand_off.writer


def access_record(
    created_ns: int, method: str, code: str, elapsed: float, job_id: str, request_id: str
) -> logging.LogRecord:
    """The access-log record of one call, as ``Observer.record`` makes it (the message and its fields),
    made at the time the call ended."""
    record = logging.LogRecord(
        rpc_log.name, logging.INFO, "", 0, "%s %s %.1fms%s",
        (method, code, elapsed * 1000, f" job={job_id}" if job_id else ""), None,
    )  # fmt: skip
    record.created = created_ns / 1e9
    record.msecs = (created_ns % 1_000_000_000) // 1_000_000 + 0.0
    record.method = method
    record.code = code
    record.duration_ms = round(elapsed * 1000, 3)
    record.job_id = job_id
    record.request_id = request_id
    return record


_stamping = False


def stamp_trace_ids() -> None:
    """From now on, a log record made while a span is current carries its ``trace_id`` and ``span_id``
    (hex, as trace views show them), which the JSON form writes. Installed by the wiring only when
    tracing is on (once per process: it wraps the logging module's record factory). The ids are read
    when the record is made, on the thread that logs it: the LogWriter formats records later, on a
    thread of its own, outside the span."""
    global _stamping
    if _stamping:
        return
    _stamping = True
    from opentelemetry import trace

    make = logging.getLogRecordFactory()
    current_span = trace.get_current_span

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        ids = current_span().get_span_context()
        if ids.is_valid:
            record.trace_id = format(ids.trace_id, "032x")
            record.span_id = format(ids.span_id, "016x")
        return record

    logging.setLogRecordFactory(stamped)


class TextFormatter(logging.Formatter):
    """``time level logger: message``, and `` trace_id=... span_id=...`` when the record was made inside a
    span (tracing on: ``stamp_trace_ids``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id is None:
            return text
        line, newline, rest = text.partition("\n")  # the ids on the message's line, before a traceback
        return f"{line} trace_id={trace_id} span_id={getattr(record, 'span_id', '')}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the RPC fields when present."""

    FIELDS = ("method", "code", "duration_ms", "job_id", "request_id", "peer", "trace_id", "span_id")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


# Per request message class, which of job_id, chunk_id and name it has: looking a missing field up on a
# message raises and catches an AttributeError inside getattr, a microsecond each, on every call's log line.
_ID_FIELDS: dict[type, tuple[str, ...]] = {}
_ID_NAMES = ("job_id", "chunk_id", "name")


def job_id_of(request: Any) -> str:
    """The job an RPC is about, when its request says (job_id, a chunk id's job part, or the job of a
    google.longrunning operation name ``operations/<job id>``)."""
    fields = _ID_FIELDS.get(type(request))
    if fields is None:
        descriptor = getattr(type(request), "DESCRIPTOR", None)
        by_name = getattr(descriptor, "fields_by_name", None)
        fields = tuple(f for f in _ID_NAMES if by_name is None or f in by_name)
        if len(_ID_FIELDS) < 256:  # request classes: one per method
            _ID_FIELDS[type(request)] = fields
    if not fields:
        return ""
    job_id = getattr(request, "job_id", "") if "job_id" in fields else ""
    if not job_id and "chunk_id" in fields:
        chunk_id = getattr(request, "chunk_id", "")
        job_id = chunk_id.rsplit("-", 1)[0] if chunk_id else ""
    if not job_id and "name" in fields:
        name = getattr(request, "name", "")
        job_id = (
            name[len("operations/") :] if isinstance(name, str) and name.startswith("operations/") else ""
        )
    return str(job_id)[:64]


def request_id_of(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "x-request-id":
            return str(value)[:128]
    return ""


class Observer:
    """Records each RPC's outcome in the metrics and the log."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # The labelled children of each (method, code), looked up once instead of on every call.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def record(self, method: str, code: str, started: float, request: Any, context: Any) -> None:
        elapsed = time.perf_counter() - started
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (
                self.metrics.rpcs.labels(method, code),
                self.metrics.rpc_seconds.labels(method, code),
            )
        children[0].inc()
        children[1].observe(elapsed)
        if rpc_log.isEnabledFor(logging.INFO):
            writer = _access_writer()
            if writer is not None:
                # The server's own logging: the record is made and formatted on the writer's thread, a
                # batch at a time (a record made here and sent through Logger.handle took about 6% of a
                # SQLite complete-and-claim's loop time).
                writer.put_access(
                    (
                        time.time_ns(), method, code, elapsed, job_id_of(request),
                        request_id_of(context.invocation_metadata()),
                    )
                )  # fmt: skip
                return
            fields = {
                "method": method,
                "code": code,
                "duration_ms": round(elapsed * 1000, 3),
                "job_id": job_id_of(request),
                "request_id": request_id_of(context.invocation_metadata()),
            }
            # The record made directly: Logger.info would also walk the stack for the caller's file and
            # line, which no formatter here prints (13 us a line, this 6 us).
            rpc_log.handle(
                rpc_log.makeRecord(
                    rpc_log.name, logging.INFO, "", 0, "%s %s %.1fms%s",
                    (method, code, elapsed * 1000, f" job={fields['job_id']}" if fields["job_id"] else ""),
                    None, extra=fields,
                )
            )  # fmt: skip


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
