"""jobpulse: a Python SDK for the jobpulse job-status service.

The names users need are re-exported here:

* :class:`Client` / :class:`AsyncClient` wrap the JobService and WorkerService RPCs.
* :class:`Worker` runs a handler over claimed chunks; :class:`Task` is what the handler gets.
* :class:`AsyncWorker` does the same on an asyncio event loop, with async handlers taking an
  :class:`AsyncTask`.
* :class:`ReconnectInfo` / :class:`ResumeInfo` are what ``watch_job``'s ``on_reconnect`` and
  ``on_resume`` callbacks receive.
* :class:`BulkOperation` is what ``cancel_jobs``, ``retry_jobs`` and ``purge_jobs`` return: how far
  a bulk operation over a filter has got.
* :class:`JobFilter` is which jobs ``list_jobs``, ``export_jobs``, ``watch_jobs`` and the bulk calls
  mean: its keys are their filter keywords, so one filter can be built once and given to several.
* :class:`EventsToken` is what ``create_events_token`` returns: a browser's short-lived token for the
  server's HTTP events paths.
* :func:`job_state_name`, :func:`chunk_state_name` and :func:`event_type_name` give an enum value's short
  name ("COMPLETED", "CHANGE"); :func:`job_state` and friends turn a name back into the value.
* :mod:`jobpulse.errors` holds the typed exceptions; :class:`PermanentError` fails a chunk for good.
* :mod:`jobpulse.v1` holds the generated protobuf messages (``job_pb2.Job`` and friends).

The names are loaded on first use, not by ``import jobpulse``: the ``jobpulse`` command can then
choose gRPC's log level before gRPC is imported (see ``jobpulse.cli._entry``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobpulse import errors
    from jobpulse._async.client import AsyncClient
    from jobpulse._async.worker import AsyncTask, AsyncWorker
    from jobpulse._bulk import BulkOperation
    from jobpulse._convert import (
        chunk_state,
        chunk_state_name,
        event_type_name,
        is_terminal,
        job_state,
        job_state_name,
        job_view,
    )
    from jobpulse._events_token import EventsToken
    from jobpulse._filters import JobFilter
    from jobpulse._sync.client import Client
    from jobpulse._watch import ReconnectInfo, ResumeInfo
    from jobpulse.errors import JobpulseError, LeaseLost, PermanentError, WaitTimeout
    from jobpulse.v1 import job_pb2, job_service_pb2, worker_service_pb2
    from jobpulse.v1.job_pb2 import Artifact, Chunk, ChunkState, Job, JobState, JobView
    from jobpulse.worker import Task, Worker

__version__ = "0.1.0"

# Each public name and the module it comes from.
_EXPORTS = {
    "Artifact": "jobpulse.v1.job_pb2",
    "AsyncClient": "jobpulse._async.client",
    "AsyncTask": "jobpulse._async.worker",
    "AsyncWorker": "jobpulse._async.worker",
    "BulkOperation": "jobpulse._bulk",
    "Chunk": "jobpulse.v1.job_pb2",
    "ChunkState": "jobpulse.v1.job_pb2",
    "Client": "jobpulse._sync.client",
    "EventsToken": "jobpulse._events_token",
    "Job": "jobpulse.v1.job_pb2",
    "JobFilter": "jobpulse._filters",
    "JobState": "jobpulse.v1.job_pb2",
    "JobView": "jobpulse.v1.job_pb2",
    "JobpulseError": "jobpulse.errors",
    "LeaseLost": "jobpulse.errors",
    "PermanentError": "jobpulse.errors",
    "ReconnectInfo": "jobpulse._watch",
    "ResumeInfo": "jobpulse._watch",
    "Task": "jobpulse.worker",
    "WaitTimeout": "jobpulse.errors",
    "Worker": "jobpulse.worker",
    "chunk_state": "jobpulse._convert",
    "chunk_state_name": "jobpulse._convert",
    "event_type_name": "jobpulse._convert",
    "is_terminal": "jobpulse._convert",
    "job_state": "jobpulse._convert",
    "job_state_name": "jobpulse._convert",
    "job_view": "jobpulse._convert",
}
_SUBMODULES = {
    "errors": "jobpulse.errors",
    "job_pb2": "jobpulse.v1.job_pb2",
    "job_service_pb2": "jobpulse.v1.job_service_pb2",
    "worker_service_pb2": "jobpulse.v1.worker_service_pb2",
}

__all__ = [
    "Artifact",
    "AsyncClient",
    "AsyncTask",
    "AsyncWorker",
    "BulkOperation",
    "Chunk",
    "ChunkState",
    "Client",
    "EventsToken",
    "Job",
    "JobFilter",
    "JobState",
    "JobView",
    "JobpulseError",
    "LeaseLost",
    "PermanentError",
    "ReconnectInfo",
    "ResumeInfo",
    "Task",
    "WaitTimeout",
    "Worker",
    "__version__",
    "chunk_state",
    "chunk_state_name",
    "errors",
    "event_type_name",
    "is_terminal",
    "job_pb2",
    "job_service_pb2",
    "job_state",
    "job_state_name",
    "job_view",
    "worker_service_pb2",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'jobpulse' has no attribute {name!r}")
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return list(__all__)
