"""Per-key usage (calls admitted and rejected) and what a lease from a shared rate-limit bucket gave."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KeyUsage:
    """Calls admitted and rejected for one API key."""

    role: str
    calls: int = 0
    rejected: int = 0

    def add(self, other: KeyUsage) -> None:
        self.role = other.role or self.role
        self.calls += other.calls
        self.rejected += other.rejected


@dataclass(frozen=True)
class Lease:
    """Tokens taken from a key's shared bucket: all that were asked for, or none; when none was
    granted, ``wait`` is the seconds until the bucket holds as many as were asked for."""

    granted: int
    wait: float = 0.0
    # Tokens left in the bucket after this lease.
    left: float = 0.0
