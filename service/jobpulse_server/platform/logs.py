"""The server's logs: the log writer thread, text and JSON formatters, trace ids on records, and one
access-log line per RPC (``Observer``, which also counts each RPC in the metrics)."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from typing import Any

from opentelemetry import trace

from jobpulse_server.platform.metrics import Metrics

rpc_log = logging.getLogger("jobpulse.rpc")


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
