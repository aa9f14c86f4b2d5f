"""Server configuration, from command-line flags and JOBPULSE_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ENV_PREFIX = "JOBPULSE_"


def _flag(default: Any, help_text: str) -> Any:
    """A setting ``jobpulse-server serve`` also takes as a flag (``--<name>``), with its help text."""
    return field(default=default, metadata={"flag": True, "help": help_text})


@dataclass
class Config:
    """Everything the server needs to start.

    Each field can also be set by an environment variable named ``JOBPULSE_<FIELD>``
    (for example ``JOBPULSE_PORT``); explicit arguments win over the environment.
    """

    host: str = _flag("127.0.0.1", "address to listen on")
    port: int = _flag(50051, "port to listen on; 0: any free port (the log says which)")
    database_url: str = _flag(
        "sqlite:///jobpulse.db", "sqlite:///FILE (created if missing) or postgresql://..."
    )
    log_level: str = _flag("INFO", "DEBUG, INFO, WARNING or ERROR")
    # Seconds between idle-stream heartbeats on WatchJob.
    heartbeat_interval: float = 15.0
    # Shortest time between two CHANGE messages of one WatchJob stream; changes in between are folded.
    watch_min_interval: float = 0.2
    # SQLite only: run statements on the event loop's thread (true) or on one dedicated thread
    # (false). See the README, "SQLite on the event loop".
    sqlite_on_loop: bool = True
    # Calls that may wait to be taken up by the event loop before new ones are refused
    # (RESOURCE_EXHAUSTED); twice this is the hard limit.
    max_pending_calls: int = 20_000
    # Young-generation threshold of Python's cyclic garbage collector (interpreter default 700),
    # applied at start-up together with gc.freeze(); 0 leaves the collector as it is. See gc_tuning.py.
    gc_threshold: int = 50_000
    # Seconds between scans for expired leases and overdue cancels.
    sweep_interval: float = 1.0
    # Seconds a cancelled job's running chunks get to stop before they are force-cancelled.
    cancel_deadline: float = 60.0
    # First retry backoff after a retryable FailChunk; doubles per attempt, with jitter.
    retry_backoff: float = 1.0
    # Upper bound for the retry backoff.
    retry_backoff_max: float = 300.0
    # HTTP/2 keepalive: seconds between pings on an idle connection, and how long an unanswered ping
    # may take before the connection is dropped.
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    # Seconds after which a connection is closed (clients reconnect, spreading over replicas), and the
    # grace its calls under way get to finish; 0 keeps connections for ever.
    max_connection_age: float = 1800.0
    max_connection_age_grace: float = 300.0
    # Seconds given to in-flight calls and open streams on SIGTERM before they are ended.
    drain_seconds: float = 5.0
    # Largest number of chunks one job may have.
    max_chunks_per_job: int = 100_000
    insecure: bool = _flag(False, "serve a non-loopback address even with no API keys (refused otherwise)")
    # PEM files for TLS; both or neither.
    tls_cert: str = _flag("", "PEM file of the server's TLS certificate (with --tls-key)")
    tls_key: str = _flag("", "PEM file of the TLS certificate's private key")
    # Calls per second per key, by role (bursts of twice that); 0 means unlimited.
    rate_limit_client: float = 50.0
    rate_limit_worker: float = 200.0
    rate_limit_admin: float = 0.0
    # PostgreSQL: one bucket per key in the database, shared by every replica (true), or a bucket per
    # replica in memory (false: N replicas admit up to N times the limit). SQLite always limits in
    # memory, which is exact there (one process).
    rate_limit_shared: bool = True
    # PostgreSQL, shared limits: a replica takes a key's tokens from the shared bucket in blocks of
    # b = rate x this (at least 1, at most half the burst; 50/s -> 5) and admits from its block in
    # memory, so it visits the database about once per b/2 calls, not per call. Tolerance: over any
    # T seconds all N replicas together admit at most burst + rate x T + N x b calls of a key (one
    # server: burst + rate x T). Larger blocks, fewer statements, more slack. See services/ratelimit.py.
    rate_limit_lease_seconds: float = 0.1
    # Seconds between writes of the per-key call counts (GetUsage) to the database: one statement
    # per flush, not per call. A kill -9 loses at most this long's counts; SIGTERM loses none.
    usage_flush_interval: float = 1.0
    # Seconds between re-reads of the API keys (how soon a revoke takes effect).
    key_refresh_interval: float = 2.0
    # Seconds between database probes behind grpc health (NOT_SERVING while it fails).
    health_interval: float = 2.0
    metrics_port: int = _flag(
        -1, "serve Prometheus /metrics on this port of the same host; -1: off, 0: any free port"
    )
    http_port: int = _flag(
        8080,
        "port of the HTTP side (Server-Sent Events, /healthz, /readyz, /metrics) on the same host; "
        "0: any free port, -1: off",
    )
    http_cors_origins: str = _flag(
        "",
        "comma-separated origins (https://app.example.com) whose pages may read /v1/... from a "
        "browser; empty: same origin only",
    )
    # Seconds a client gets to send a request's line and headers (from the connection or the request's
    # first byte) before the HTTP side closes the connection.
    http_header_timeout: float = 10.0
    # Seconds an HTTP response's writes may stay blocked (the client reads nothing) before the
    # connection is dropped; also the TCP user timeout for peers that vanished without a close.
    http_stall_timeout: float = 60.0
    log_format: str = _flag("text", "log lines as text or json (one JSON object per line)")
    # Signs webhooks of jobs whose owner has no key of its own (open mode).
    webhook_secret: str = ""
    # Comma-separated hosts webhooks may go to; empty allows any host.
    webhook_allowed_hosts: str = ""
    # Seconds a webhook event is retried (exponential backoff from webhook_retry_base) before it is dead.
    webhook_retry_period: float = 86_400.0
    webhook_retry_base: float = 1.0
    # Seconds between job.progress events of one job, and the per-POST timeout.
    webhook_progress_interval: float = 5.0
    webhook_timeout: float = 10.0
    # AIP-214 expiry (README, "Retention"): seconds a finished job is kept after its end_time when
    # CreateJob set no ttl, per terminal state; 0 keeps such jobs for ever. Expired jobs are deleted
    # (chunks and artifacts too) by the sweeper, and WatchJobs reports them as deletions.
    retention_completed: float = 7 * 86_400.0
    retention_failed: float = 30 * 86_400.0
    retention_cancelled: float = 30 * 86_400.0
    # Seconds a deleted job's tombstone is kept: a WatchJobs cursor older than this may miss deletions
    # made before the tombstones went. 0 keeps tombstones for ever.
    tombstone_retention: float = 90 * 86_400.0
    # Seconds a webhook delivery that is done (delivered or dead) is kept after its last attempt,
    # whether its job still exists or not; pending ones are never trimmed. 0 keeps them for ever.
    webhook_delivery_retention: float = 30 * 86_400.0
    # Rows deleted per transaction (expired jobs, tombstones, deliveries), and expired-job candidates
    # looked at per sweep (each kind of trim also stops there): short transactions, a bounded sweep.
    retention_batch: int = 100
    retention_max_per_sweep: int = 20_000

    def __post_init__(self) -> None:
        # Values that parse but mean nothing (JOBPULSE_LOG_LEVEL=verbose) are refused here, naming the
        # variable, instead of being taken silently.
        self.log_level = self.log_level.upper()
        _one_of("log_level", self.log_level, LOG_LEVELS)
        _one_of("log_format", self.log_format, ("text", "json"))
        if not 0 <= self.port <= 65535:
            raise ValueError(
                f"JOBPULSE_PORT / --port: {self.port} is not a port (0 to 65535; 0: any free port)"
            )
        if not -1 <= self.http_port <= 65535:
            raise ValueError(
                f"JOBPULSE_HTTP_PORT / --http-port: {self.http_port} is not a port "
                "(0 to 65535; 0: any free port, -1: off)"
            )
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(
                    f"JOBPULSE_HTTP_CORS_ORIGINS / --http-cors-origins: {origin!r} is not an origin "
                    "(scheme://host[:port], e.g. https://app.example.com)"
                )

    @property
    def cors_origins(self) -> list[str]:
        """``http_cors_origins`` as a list (no trailing slashes)."""
        return [o.strip().rstrip("/") for o in self.http_cors_origins.split(",") if o.strip()]

    @staticmethod
    def env_name(name: str) -> str:
        """The variable of the setting ``name``: ``JOBPULSE_`` and the name in capitals."""
        return ENV_PREFIX + name.upper()

    @classmethod
    def settings(cls) -> tuple[Field[Any], ...]:
        """Every setting, in declaration order (each a dataclass field: name, default, metadata)."""
        return fields(cls)

    @classmethod
    def read(cls, name: str, environ: Mapping[str, str] | None = None) -> Any:
        """The value of the variable of one setting, checked (``None`` when unset or empty), without
        reading any other: a command reads only the settings it uses.

        Raises:
            ValueError: One line naming the variable, the value and what was expected.
        """
        env = os.environ if environ is None else environ
        variable = cls.env_name(name)
        raw = env.get(variable)
        if raw is None or raw == "":
            return None
        default = _DEFAULTS[name]
        try:
            if isinstance(default, bool):
                return _boolean(raw)
            return type(default)(raw)
        except ValueError:
            expected = {bool: "1/true/yes/on or 0/false/no/off", int: "a whole number", float: "a number"}
            wanted = expected.get(type(default), type(default).__name__)
            raise ValueError(f"{variable}={raw!r} is not valid: expected {wanted}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Builds a config from ``JOBPULSE_*`` variables, then applies non-None overrides (flags)."""
        values: dict[str, object] = {}
        for f in fields(cls):
            value = overrides.get(f.name)
            if value is None:
                value = cls.read(f.name, environ)
            if value is not None:
                values[f.name] = value
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)  # type: ignore[arg-type]


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"JOBPULSE_{name.upper()} / {flag}: {value!r} is not one of {', '.join(allowed)}")


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
