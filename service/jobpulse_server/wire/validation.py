"""Shape checks of incoming requests, collecting every bad field before failing.

Rules that need stored state (a job's current state, a lease) live in the services.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from jobpulse_server.domain.errors import FieldViolation, InvalidArgument
from jobpulse_server.domain.filters import DEFAULT_ORDER, ORDERS

MAX_DISPLAY_NAME = 256
MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
MAX_METADATA_BYTES = 64 * 1024
MAX_ID = 128
MAX_BATCH = 100
MAX_VIOLATIONS = 20


class Checker:
    """Collects field violations; ``done()`` raises InvalidArgument if there were any."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.fail(field, description)

    def done(self) -> None:
        if self.violations:
            # Bounded, so the error stays far below gRPC's metadata limits whatever was sent.
            shown = self.violations[:MAX_VIOLATIONS]
            if len(self.violations) > MAX_VIOLATIONS:
                shown.append(
                    FieldViolation("*", f"and {len(self.violations) - MAX_VIOLATIONS} more problems")
                )
            raise InvalidArgument(shown)

    # --- common shapes ------------------------------------------------------
    def text(self, value: str, field: str, limit: int, *, required: bool = False) -> None:
        if required and not value:
            self.fail(field, "is required")
        elif len(value) > limit:
            self.fail(field, f"must be at most {limit} characters (got {len(value)})")
        elif "\x00" in value:
            self.fail(field, "must not contain NUL characters")

    def labels(self, labels: dict[str, str], field: str = "labels") -> None:
        if len(labels) > MAX_LABELS:
            self.fail(field, f"at most {MAX_LABELS} labels (got {len(labels)})")
        for key, value in labels.items():
            if "\x00" in key or "\x00" in value:
                self.fail(f"{field}[{key[:MAX_LABEL_KEY]!r}]", "must not contain NUL characters")
            if not key or len(key) > MAX_LABEL_KEY:
                self.fail(
                    f"{field}[{key[:MAX_LABEL_KEY]}]", f"label keys must be 1 to {MAX_LABEL_KEY} characters"
                )
            if len(value) > MAX_LABEL_VALUE:
                self.fail(
                    f"{field}[{key[:MAX_LABEL_KEY]}]",
                    f"label values must be at most {MAX_LABEL_VALUE} characters",
                )

    def order_by(self, value: str, field: str = "order_by") -> str:
        """A listing's order (AIP-132): one of ORDERS, case and spacing as the caller likes;
        ``"<field> asc"`` is the same as ``"<field>"``. Empty means DEFAULT_ORDER."""
        words = value.lower().split()
        if len(words) == 2 and words[1] == "asc":
            words.pop()
        order = " ".join(words) or DEFAULT_ORDER
        self.check(order in ORDERS, field, f"must be one of: {', '.join(repr(o) for o in ORDERS)}")
        return order

    def priority(self, value: int, field: str) -> None:
        self.check(0 <= value <= 10, field, f"must be between 0 and 10 (got {value})")

    def enums(self, values: Iterable[int], allowed: Iterable[int], field: str) -> None:
        ok = set(allowed)
        bad = sorted({v for v in values if v not in ok})
        if bad:
            shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
            self.fail(field, f"not valid values here: {shown}")

    def metadata(self, value: dict[str, Any], field: str = "metadata") -> None:
        size = len(json.dumps(value, separators=(",", ":")))
        if size > MAX_METADATA_BYTES:
            self.fail(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON (got {size})")


def timestamp_us(ts: timestamp_pb2.Timestamp, field: str, c: Checker) -> int:
    if not (0 <= ts.seconds <= 253402300799) or not (0 <= ts.nanos < 1_000_000_000):
        c.fail(field, "is not a valid timestamp")
        return 0
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def duration_us(d: duration_pb2.Duration, field: str, c: Checker, *, lo_s: float, hi_s: float) -> int:
    seconds = d.seconds + d.nanos / 1e9
    if not (lo_s <= seconds <= hi_s):
        c.fail(field, f"must be between {lo_s:g}s and {hi_s:g}s (got {seconds:g}s)")
        return 0
    return int(seconds * 1e6)
