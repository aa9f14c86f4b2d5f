"""What the servicers share: the context type, page and batch limits, and small request helpers."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from jobpulse.v1 import job_pb2

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

MAX_PAGE_JOBS = 100
DEFAULT_PAGE_JOBS = 20
MAX_PAGE_CHUNKS = 1000
DEFAULT_PAGE_CHUNKS = 100
# The most error reasons one ListJobChunks may filter by.
MAX_ERROR_REASONS = 20
MAX_PAGE_KINDS = 1000
DEFAULT_PAGE_KINDS = 100
MAX_CLAIM = 100
MAX_COMPLETIONS = 100


def full_view(view: int, default_full: bool) -> bool:
    """Whether a request's JobView asks for FULL (``default_full`` when unspecified)."""
    return default_full if view == job_pb2.JOB_VIEW_UNSPECIFIED else view == job_pb2.JOB_VIEW_FULL
