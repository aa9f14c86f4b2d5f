"""PostgreSQL's batched worker path: ``path.Batch`` (what the services' worker path calls, in the worker
path's own types) over ``group.GroupCommit`` (the flusher and its statements)."""

from jobpulse_server.store.batch.path import Batch

__all__ = ["Batch"]
