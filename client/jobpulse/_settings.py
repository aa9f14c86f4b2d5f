"""The client's settings, each declared once: its flag, its ``JOBPULSE_*`` variable, its default, its check.

The SDK (``Client``, ``AsyncClient``, the workers) and the ``jobpulse`` command read the same variables
through these declarations, so a key or target exported once serves both, and a bad value is refused the
same way everywhere: one ``SettingError`` naming the flag or variable it came from. ``--help`` builds each
flag's text from here too (``help_text``), so the default and the variable it shows are the ones used.

A value is resolved as: the flag (or constructor argument) when given, else the variable when set and
not empty, else the default. Variables are read when a setting is resolved, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

# The target schemes gRPC resolves itself; any other "scheme://" (http, https, grpc) is a user's mistake.
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:", "xds:")


class SettingError(ValueError):
    """A setting holds a value that cannot be used: ``source`` (the flag or variable it came from),
    the value, and what is wrong with it. The CLI prints it as one line and exits 2 (usage)."""

    def __init__(self, source: str, value: str, problem: str) -> None:
        super().__init__(f"{source}={value!r}: {problem}")
        self.source = source
        self.value = value
        self.problem = problem

    @property
    def name(self) -> str:
        """The flag or variable the value came from (an alias of ``source``)."""
        return self.source


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); ValueError otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected 1/true/yes/on or 0/false/no/off")


def parse_target(text: str) -> str:
    """A gRPC target: ``host:port`` (or gRPC's own ``dns:``/``unix:``/... names). Refuses what gRPC would
    misread: a scheme such as ``http://`` ("Misformatted domain name"), a port that is no number, or one
    past 65535 (which gRPC would silently wrap to another port)."""
    target = text.strip()
    if not target:
        raise ValueError("expected host:port")
    if target.startswith(_GRPC_SCHEMES):
        return target  # gRPC's own name syntax: gRPC checks it
    if "://" in target:
        raise ValueError("expected host:port, without a scheme such as http://")
    host, sep, port = target.rpartition(":")
    if sep and host and not host.endswith("]") and ":" in host:
        return target  # a bare IPv6 address: gRPC takes it as is
    if sep and host and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError("the port must be a number from 1 to 65535")
    return target


def parse_http_url(text: str) -> str:
    """The base URL of the server's HTTP side: ``http://`` or ``https://``, a host, optionally a port and
    a path prefix (behind a proxy); no query or fragment, since paths are appended to it."""
    url = text.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [IPv6] bracket
        raise ValueError("expected http(s)://host[:port]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http(s)://host[:port]")
    try:
        port = parts.port  # ValueError for a port that is no number or past 65535
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ValueError("the port must be a number from 1 to 65535")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("expected a base URL without ?query or #fragment")
    return url


#: The port of the server's HTTP side unless the server was told otherwise (its ``--http-port``).
DEFAULT_HTTP_PORT = 8080


def target_host(target: str) -> str:
    """The host of a gRPC target, as a URL writes it (an IPv6 address in brackets): ``jobs:443`` ->
    ``jobs``, ``[::1]:50051`` -> ``[::1]``, ``dns:///jobs:50051`` -> ``jobs``, ``ipv4:10.0.0.1:50051``
    -> ``10.0.0.1`` (the first of a list). ValueError for a target with no host (``unix:``, ...)."""
    rest = target.strip()
    if rest.startswith("dns:"):
        rest = rest[len("dns:") :]
        if rest.startswith("//"):  # dns://[authority]/host:port
            rest = rest[2:].partition("/")[2]
    elif rest.startswith(("ipv4:", "ipv6:")):
        rest = rest[len("ipv4:") :].split(",")[0]
    elif rest.startswith(_GRPC_SCHEMES):
        raise ValueError("names no host the HTTP side could be found at")
    if rest.startswith("["):
        host = rest[: rest.find("]") + 1]
    elif rest.count(":") > 1:
        host = f"[{rest}]"  # a bare IPv6 address
    else:
        host = rest.partition(":")[0]
    if not host or host == "[]":
        raise ValueError("names no host the HTTP side could be found at")
    return host


def default_http_url(target: str, secure: bool) -> str:
    """Where the server's HTTP side answers by default: the target's host on port 8080, over
    ``https://`` when the gRPC connection uses TLS."""
    scheme = "https" if secure else "http"
    return f"{scheme}://{target_host(target)}:{DEFAULT_HTTP_PORT}"


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: the flag that sets it, the variable that sets it when the flag is not given, the
    default, and the function that checks a value given as text (raising ValueError saying what is
    wrong)."""

    flag: str
    env: str
    default: T
    parse: Callable[[str], T]
    help: str
    #: How ``--help`` shows the default (``None``: the default itself).
    shown_default: str | None = None

    def from_env(self, environ: Mapping[str, str] | None = None) -> T | None:
        """The variable's value, checked; ``None`` when it is unset or empty."""
        raw = (os.environ if environ is None else environ).get(self.env, "")
        if raw == "":
            return None
        return self.check(raw, self.env)

    def check(self, raw: str, source: str) -> T:
        """``raw`` parsed, or ``SettingError`` naming ``source``."""
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(source, raw, str(exc)) from None

    def resolve(self, given: T | None, environ: Mapping[str, str] | None = None) -> T:
        """``given`` (a flag or argument) when not ``None``, else the variable, else the default."""
        if given is not None:
            return given
        from_env = self.from_env(environ)
        return self.default if from_env is None else from_env

    def help_text(self, extra: str = "") -> str:
        """The flag's ``--help`` line: what it does, its variable and its default."""
        default = self.shown_default if self.shown_default is not None else str(self.default)
        return f"{self.help}{extra} (env {self.env}; default {default})"


TARGET: Setting[str] = Setting(
    "--target", "JOBPULSE_TARGET", "127.0.0.1:50051", parse_target, "server address host:port"
)
API_KEY: Setting[str] = Setting(
    "--api-key",
    "JOBPULSE_API_KEY",
    "",
    _text,
    "API key, sent as 'authorization: Bearer <key>'",
    shown_default="none",
)
TLS: Setting[bool] = Setting(
    "--tls", "JOBPULSE_TLS", False, parse_bool, "connect with TLS, trusting the system's CAs", "off"
)
TLS_CA: Setting[str] = Setting(
    "--tls-ca",
    "JOBPULSE_TLS_CA",
    "",
    _text,
    "PEM file of the CA that signed the server's certificate; implies --tls",
    shown_default="none",
)
DEBUG: Setting[bool] = Setting(
    "--debug",
    "JOBPULSE_DEBUG",
    False,
    parse_bool,
    "print the traceback of an error, for bug reports",
    shown_default="off",
)

#: Every client setting, in the order ``--help`` lists them.
CLIENT_SETTINGS: tuple[Setting[str] | Setting[bool], ...] = (TARGET, API_KEY, TLS, TLS_CA, DEBUG)

#: The base URL of the server's HTTP side, for what prints a browser's URL (``jobpulse events-url``); not
#: among ``CLIENT_SETTINGS``, which every client command takes. Empty: :func:`default_http_url`.
HTTP_URL: Setting[str] = Setting(
    "--http-url",
    "JOBPULSE_HTTP_URL",
    "",
    parse_http_url,
    "base URL of the server's HTTP side",
    shown_default=f"http://<host of --target>:{DEFAULT_HTTP_PORT}, https:// with TLS",
)


@dataclass(frozen=True)
class Connection:
    """Where and how to connect, resolved from arguments, variables and defaults."""

    target: str
    api_key: str
    secure: bool
    root_certificates: bytes | None


def read_pem(path: str, source: str) -> bytes:
    """The bytes of the PEM file at ``path``; ``SettingError`` naming ``source`` if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise SettingError(source, path, exc.strerror or str(exc)) from None


def resolve_connection(
    target: str | None = None,
    *,
    api_key: str | None = None,
    secure: bool | None = None,
    root_certificates: bytes | None = None,
    tls_ca: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """Resolves the connection settings the SDK and the CLI share. Arguments win; ``None`` means "not
    given": then ``JOBPULSE_TARGET``, ``JOBPULSE_API_KEY`` (``""`` passed means no key, on purpose),
    ``JOBPULSE_TLS`` and ``JOBPULSE_TLS_CA`` (a CA file implies TLS) apply.

    Raises:
        SettingError: A value that cannot be used, naming the flag or variable it came from.
    """
    resolved_target = TARGET.check(target, TARGET.flag) if target else TARGET.resolve(None, environ)
    key = API_KEY.resolve(api_key, environ)
    if secure is False and root_certificates is None and not tls_ca:
        return Connection(resolved_target, key, False, None)  # plaintext asked for: no TLS variable applies
    if root_certificates is None:
        if tls_ca is not None:
            root_certificates = read_pem(tls_ca, TLS_CA.flag) if tls_ca else None
        else:
            ca_path = TLS_CA.from_env(environ)
            root_certificates = read_pem(ca_path, TLS_CA.env) if ca_path else None
    use_tls = TLS.resolve(secure, environ) or root_certificates is not None
    return Connection(resolved_target, key, use_tls, root_certificates)


def resolve_http_url(
    http_url: str | None, connection: Connection, environ: Mapping[str, str] | None = None
) -> str:
    """The base URL of the server's HTTP side: ``http_url`` (a flag or argument) when given, else
    ``JOBPULSE_HTTP_URL``, else the connection's target host on port 8080 (``https://`` with TLS).

    Raises:
        SettingError: A URL that cannot be used, naming the flag or variable it came from; or a target
            with no host to default to (``unix:...``), naming ``--target``.
    """
    resolved = HTTP_URL.check(http_url, HTTP_URL.flag) if http_url else HTTP_URL.resolve(None, environ)
    if resolved:
        return resolved
    try:
        return default_http_url(connection.target, connection.secure)
    except ValueError as exc:
        problem = f"{exc}; pass {HTTP_URL.flag} (or set {HTTP_URL.env})"
        raise SettingError(TARGET.flag, connection.target, problem) from None
