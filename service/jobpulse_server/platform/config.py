"""Server configuration, from command-line flags and JOBPULSE_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from jobpulse_server.platform.artifact_uris import DEFAULT_SCHEMES, schemes_of

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FAIR_SHARE = ("owner", "off")
ENV_PREFIX = "JOBPULSE_"


def _flag(default: Any, help_text: str) -> Any:
    """A setting ``jobpulse-server serve`` also takes as a flag (``--<name>``), with its help text."""
    return field(default=default, metadata={"flag": True, "help": help_text})


def _setting(default: Any, help_text: str) -> Any:
    """A setting read from its variable only, with its help text (the configuration reference,
    docs/reference/configuration.md, is generated from it:
    ``python -m jobpulse_server.cli.settings_reference``)."""
    return field(default=default, metadata={"help": help_text})


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
    heartbeat_interval: float = _setting(
        15.0, "seconds between heartbeats on an idle watch stream (WatchJob, WatchJobs, and over SSE)"
    )
    watch_min_interval: float = _setting(
        0.2, "shortest gap, in seconds, between two CHANGE messages of one watch; changes in between fold"
    )
    # See docs/databases.md, "SQLite on the event loop".
    sqlite_on_loop: bool = _setting(
        True, "SQLite only: run statements on the event loop's thread (false: on one dedicated thread)"
    )
    max_pending_calls: int = _setting(
        20_000,
        "calls that may wait to be taken up by the event loop before new ones are refused "
        "(RESOURCE_EXHAUSTED); twice this is the hard limit",
    )
    # Interpreter default 700. See gc_tuning.py.
    gc_threshold: int = _setting(
        50_000,
        "young-generation threshold of Python's cyclic garbage collector, applied at start-up with "
        "gc.freeze(); 0 leaves the interpreter's defaults",
    )
    encoded_cache_bytes: int = _setting(
        32 * 1024 * 1024,
        "memory, in bytes, the cache of encoded jobs (GetJob, ListJobs, BatchGetJobs) may take, counted at "
        "what its entries really cost; 0 turns it off",
    )
    encoded_cache_idle_seconds: float = _setting(
        60.0,
        "seconds an entry of the encoded-job cache may go unread before it is dropped, so that its memory "
        "follows the jobs being read rather than filling to encoded_cache_bytes; 0: only the budget drops "
        "entries",
    )
    sweep_interval: float = _setting(
        1.0, "seconds between scans for expired leases and overdue cancels (and the expiry sweep)"
    )
    schedule_misfire_grace: float = _setting(
        60.0,
        "seconds a schedule's tick may be late (no server ran at its time) and still make its job as any "
        "tick does; a later tick, or several missed ones, follow the schedule's misfire_policy",
    )
    bulk_batch_size: int = _setting(
        500,
        "jobs a bulk operation (CancelJobs, RetryJobs, PurgeJobs) acts on per transaction; between two "
        "batches other calls and workers get the database",
    )
    cancel_deadline: float = _setting(
        60.0, "seconds a cancelled job's running chunks get to stop before the server cancels them itself"
    )
    retry_backoff: float = _setting(
        1.0, "first backoff, in seconds, after a retryable FailChunk; doubles per attempt, with jitter"
    )
    retry_backoff_max: float = _setting(300.0, "upper bound of the retry backoff, in seconds")
    keepalive_time: float = _setting(30.0, "seconds between HTTP/2 keepalive pings on an idle connection")
    keepalive_timeout: float = _setting(
        10.0, "seconds an unanswered keepalive ping may take before the connection is dropped"
    )
    max_connection_age: float = _setting(
        1800.0,
        "seconds after which a connection is closed with GOAWAY (clients reconnect, spreading over "
        "replicas); 0 keeps connections for ever",
    )
    max_connection_age_grace: float = _setting(
        300.0, "seconds the calls under way on an aged connection get to finish"
    )
    drain_seconds: float = _setting(
        5.0, "seconds given to calls in flight and open streams on SIGTERM before they are ended"
    )
    max_chunks_per_job: int = _setting(100_000, "most chunks one job may have")
    fair_share: str = _flag(
        "owner",
        "claim order between owners: owner (within a priority, the owner with the fewest running chunks "
        "first) or off (the highest priority, then the oldest job)",
    )
    insecure: bool = _flag(False, "serve a non-loopback address even with no API keys (refused otherwise)")
    # PEM files for TLS; both or neither.
    tls_cert: str = _flag("", "PEM file of the server's TLS certificate (with --tls-key)")
    tls_key: str = _flag("", "PEM file of the TLS certificate's private key")
    # Calls per second per key, by role (bursts of twice that); 0 means unlimited.
    rate_limit_client: float = _setting(
        50.0, "calls per second per client key (bursts of twice that); 0: unlimited"
    )
    rate_limit_worker: float = _setting(
        200.0, "calls per second per worker key (bursts of twice that); 0: unlimited"
    )
    rate_limit_admin: float = _setting(
        0.0, "calls per second per admin key (bursts of twice that); 0: unlimited"
    )
    # SQLite always limits in memory, which is exact there (one process).
    rate_limit_shared: bool = _setting(
        True,
        "PostgreSQL: one rate-limit bucket per key in the database, shared by every replica (false: a "
        "bucket per replica in memory, so N replicas admit up to N times the limit)",
    )
    # A replica visits the database about once per b/2 calls, not per call. Tolerance: over any T seconds
    # all N replicas together admit at most burst + rate x T + N x b calls of a key (one server:
    # burst + rate x T). Larger blocks, fewer statements, more slack. See services/ratelimit.py.
    rate_limit_lease_seconds: float = _setting(
        0.1,
        "PostgreSQL, shared limits: a replica takes a key's tokens in blocks of b = rate x this (at "
        "least 1, at most half the burst; 50/s -> 5) and admits calls from its block in memory",
    )
    usage_flush_interval: float = _setting(
        1.0,
        "seconds between writes of the per-key call counts (GetUsage) to the database, one statement per "
        "flush; a kill -9 loses at most this long's counts, SIGTERM none",
    )
    key_refresh_interval: float = _setting(
        2.0, "seconds between re-reads of the API keys (how soon a revoke takes effect)"
    )
    health_interval: float = _setting(
        2.0, "seconds between database probes behind grpc health (NOT_SERVING while they fail)"
    )
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
    http_header_timeout: float = _setting(
        10.0,
        "seconds a client gets to send a request's line and headers (from the connection or the "
        "request's first byte) before the HTTP side closes the connection",
    )
    http_stall_timeout: float = _setting(
        60.0,
        "seconds an HTTP response's writes may stay blocked (the client reads nothing) before the "
        "connection is dropped; also the TCP user timeout for peers that vanished without a close",
    )
    log_format: str = _flag("text", "log lines as text or json (one JSON object per line)")
    artifact_uri_schemes: str = _setting(
        ",".join(DEFAULT_SCHEMES),
        "comma-separated URI schemes an artifact's uri may have; anything else (a local path, file:) "
        "is refused with INVALID_ARGUMENT",
    )
    webhook_secret: str = _setting(
        "",
        "whsec_ secret (whsec_ + base64, checked at start) that signs webhooks of jobs whose owner has "
        "no key of its own (open mode); empty: webhooks are refused in open mode",
    )
    webhook_allowed_hosts: str = _setting(
        "", "comma-separated hosts webhooks may go to; empty allows any host"
    )
    webhook_retry_period: float = _setting(
        86_400.0,
        "seconds a webhook event is retried (exponential backoff from webhook_retry_base) before it is dead",
    )
    webhook_retry_base: float = _setting(1.0, "first backoff, in seconds, of a webhook delivery's retries")
    webhook_progress_interval: float = _setting(5.0, "seconds between job.progress webhook events of one job")
    webhook_timeout: float = _setting(10.0, "seconds one webhook POST may take")
    # AIP-214 expiry (docs/retention.md): expired jobs are deleted (chunks and artifacts too) by the
    # sweeper, and WatchJobs reports them as deletions.
    retention_completed: float = _setting(
        7 * 86_400.0,
        "seconds a COMPLETED job that CreateJob gave no ttl is kept after its end_time; 0 keeps it",
    )
    retention_failed: float = _setting(
        30 * 86_400.0,
        "seconds a FAILED job that CreateJob gave no ttl is kept after its end_time; 0 keeps it",
    )
    retention_cancelled: float = _setting(
        30 * 86_400.0,
        "seconds a CANCELLED job that CreateJob gave no ttl is kept after its end_time; 0 keeps it",
    )
    tombstone_retention: float = _setting(
        90 * 86_400.0,
        "seconds a deleted job's tombstone is kept: a WatchJobs cursor older than this is "
        "refused rather than resumed with deletions missing; 0 keeps tombstones for ever",
    )
    webhook_delivery_retention: float = _setting(
        30 * 86_400.0,
        "seconds a webhook delivery that is done (delivered or dead) is kept after its last attempt, "
        "whether its job still exists or not; pending ones are never trimmed; 0 keeps them for ever",
    )
    retention_batch: int = _setting(
        100, "rows deleted per transaction (expired jobs, tombstones, deliveries)"
    )
    retention_max_per_sweep: int = _setting(
        20_000, "expired-job candidates looked at per sweep (each kind of trim also stops there)"
    )

    def __post_init__(self) -> None:
        # Values that parse but mean nothing (JOBPULSE_LOG_LEVEL=verbose) are refused here, naming the
        # variable, instead of being taken silently.
        self.log_level = self.log_level.upper()
        _one_of("log_level", self.log_level, LOG_LEVELS)
        _one_of("log_format", self.log_format, ("text", "json"))
        _one_of("fair_share", self.fair_share, FAIR_SHARE)
        if not 0 <= self.port <= 65535:
            raise ValueError(
                f"JOBPULSE_PORT / --port: {self.port} is not a port (0 to 65535; 0: any free port)"
            )
        if not -1 <= self.http_port <= 65535:
            raise ValueError(
                f"JOBPULSE_HTTP_PORT / --http-port: {self.http_port} is not a port "
                "(0 to 65535; 0: any free port, -1: off)"
            )
        if not 1 <= self.bulk_batch_size <= 10_000:
            raise ValueError(
                f"JOBPULSE_BULK_BATCH_SIZE: {self.bulk_batch_size} is out of range (1 to 10000 jobs)"
            )
        try:
            schemes_of(self.artifact_uri_schemes)
        except ValueError as exc:
            raise ValueError(f"JOBPULSE_ARTIFACT_URI_SCHEMES: {exc}") from None
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(
                    f"JOBPULSE_HTTP_CORS_ORIGINS / --http-cors-origins: {origin!r} is not an origin "
                    "(scheme://host[:port], e.g. https://app.example.com)"
                )

    @property
    def artifact_schemes(self) -> frozenset[str]:
        """``artifact_uri_schemes`` as a set of lower-case schemes."""
        return schemes_of(self.artifact_uri_schemes)

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
