"""jobpulse: a Python SDK for the jobpulse job-status service.

The names users need are re-exported here:

* :class:`Client` / :class:`AsyncClient` wrap the JobService and WorkerService RPCs.
* :class:`Worker` runs a handler over claimed chunks; :class:`Task` is what the handler gets.
* :class:`AsyncWorker` does the same on an asyncio event loop, with async handlers taking an
  :class:`AsyncTask`.
* :class:`ReconnectInfo` / :class:`ResumeInfo` are what ``watch_job``'s ``on_reconnect`` and
  ``on_resume`` callbacks receive.
* :mod:`jobpulse.errors` holds the typed exceptions; :class:`PermanentError` fails a chunk for good.
* :mod:`jobpulse.v1` holds the generated protobuf messages (``job_pb2.Job`` and friends).
"""

from jobpulse import errors
from jobpulse._async_client import AsyncClient
from jobpulse._async_worker import AsyncTask, AsyncWorker
from jobpulse._client import Client
from jobpulse._convert import chunk_state, is_terminal, job_state, job_view
from jobpulse._watch import ReconnectInfo, ResumeInfo
from jobpulse.errors import JobpulseError, LeaseLost, PermanentError, WaitTimeout
from jobpulse.v1 import job_pb2, job_service_pb2, worker_service_pb2
from jobpulse.v1.job_pb2 import Artifact, Chunk, ChunkState, Job, JobState, JobView
from jobpulse.worker import Task, Worker

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "AsyncClient",
    "AsyncTask",
    "AsyncWorker",
    "Chunk",
    "ChunkState",
    "Client",
    "Job",
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
    "errors",
    "is_terminal",
    "job_pb2",
    "job_service_pb2",
    "job_state",
    "job_view",
    "worker_service_pb2",
]
