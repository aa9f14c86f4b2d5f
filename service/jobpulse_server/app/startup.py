"""What the server checks and sets up before it serves: TLS credentials, the refusal to serve an open
server beyond loopback, and logging."""

from __future__ import annotations

import logging
from typing import TextIO

import grpc
from sqlalchemy.engine import make_url

from jobpulse_server.platform.config import Config
from jobpulse_server.platform.logs import JsonFormatter, LogWriter, TextFormatter, log_off_the_loop
from jobpulse_server.services.auth import is_loopback


def tls_credentials(config: Config) -> grpc.ServerCredentials:
    """The server's TLS credentials from ``config``'s certificate and key files."""
    if not (config.tls_cert and config.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


def open_mode_problem(config: Config, keys_exist: bool) -> str | None:
    """Why the server must not start without keys here, or None."""
    if keys_exist or config.insecure or is_loopback(config.host):
        return None
    return (
        f"refusing to serve {config.host} with no API keys: anyone who can reach it could do anything. "
        "Create a key (jobpulse keys create --database-url URL --name NAME --role admin), "
        "listen on 127.0.0.1, or pass --insecure"
    )


def safe_url(url: str) -> str:
    """The database URL without its password, for logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid url>"


def configure_logging(config: Config, stream: TextIO | None = None) -> LogWriter:
    """The server's logging: ``config``'s level and format, to ``stream`` (default stderr).
    Records are formatted and written on a thread of their own (at INFO, one access-log line per
    call); returns that thread's writer (stop it to flush)."""
    handler = logging.StreamHandler(stream)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # No formatter here prints the process: a record need not ask for its id (a getpid system call on
    # every access-log line) nor its multiprocessing name.
    logging.logProcesses = False
    logging.logMultiprocessing = False
    listener = log_off_the_loop(handler, getattr(logging, config.log_level.upper(), logging.INFO))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return listener
