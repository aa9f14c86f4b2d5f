"""The proto comments (what grpcurl describe and every generated client show) name every error reason
the server can put in an ErrorInfo, and every reason it writes on a failed chunk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobpulse_server.domain import errors
from jobpulse_server.services import workers

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "jobpulse" / "v1"
# Reasons any RPC may end with, whatever the service: each service's own comment lists them.
EVERY_SERVICE = ("UNAUTHENTICATED", "PERMISSION_DENIED", "RATE_LIMITED", "DATABASE_UNAVAILABLE",
                 "SHUTTING_DOWN", "INTERNAL", "INVALID_ARGUMENT")  # fmt: skip


def _reasons() -> set[str]:
    found: set[str] = set()
    pending: list[type[errors.DomainError]] = [errors.DomainError]
    while pending:
        cls = pending.pop()
        found.add(cls.reason)
        pending.extend(cls.__subclasses__())
    return found


def _comments(text: str) -> str:
    return "\n".join(m.group(1) for m in re.finditer(r"//(.*)", text))


def _service_comment(proto: str, service: str) -> str:
    """The comment block right above ``service <name> {``."""
    lines = (PROTOS / proto).read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"service {service} "))
    block: list[str] = []
    for line in reversed(lines[:at]):
        if not line.startswith("//"):
            break
        block.append(line)
    return "\n".join(reversed(block))


def test_the_reasons_are_found_where_expected() -> None:
    reasons = _reasons()
    assert {"JOB_NOT_FOUND", "LEASE_LOST", "DATABASE_UNAVAILABLE", "WEBHOOK_SECRET_MISSING"} <= reasons
    assert len(reasons) >= 15


@pytest.mark.parametrize("reason", sorted(_reasons()))
def test_every_error_reason_is_named_in_the_proto_comments(reason: str) -> None:
    comments = "\n".join(_comments(p.read_text()) for p in sorted(PROTOS.glob("*.proto")))
    assert re.search(rf"\b{reason}\b", comments), f"{reason} is raised but no proto comment names it"


@pytest.mark.parametrize(
    ("proto", "service"),
    [
        ("job_service.proto", "JobService"),
        ("worker_service.proto", "WorkerService"),
        ("admin_service.proto", "AdminService"),
    ],
)
def test_each_service_comment_names_the_reasons_any_call_can_end_with(proto: str, service: str) -> None:
    comment = _service_comment(proto, service)
    missing = [r for r in EVERY_SERVICE if not re.search(rf"\b{r}\b", comment)]
    assert missing == [], f"{service}'s comment does not name {missing}"


def test_the_chunk_error_reasons_the_server_writes_are_documented() -> None:
    comments = _comments((PROTOS / "job.proto").read_text())
    for reason in (workers.LEASE_EXPIRED, workers.CANCEL_DEADLINE, "WORKER_ERROR", "CHUNK_FAILED"):
        assert f'"{reason}"' in comments, reason


def test_watch_jobs_is_documented_as_reporting_deletions() -> None:
    comment = _comments((PROTOS / "job_service.proto").read_text())
    assert "Deleted jobs are not reported" not in comment
    assert "deleted_job_ids" in comment
