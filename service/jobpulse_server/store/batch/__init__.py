"""PostgreSQL's batched worker path: ``path.Batch`` (what the services' worker path calls, in the worker
path's own types) over ``flushes.GroupCommit`` (what a flush writes), ``queue.BatchQueue`` (the queues,
the flusher and the answers; no SQL) and ``sql`` (the statements)."""

from jobpulse_server.store.batch.path import Batch

__all__ = ["Batch"]
