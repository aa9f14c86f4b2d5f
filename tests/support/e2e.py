"""Helpers shared by the end-to-end tests: polling with a deadline, chunk recounts, small worker loops."""

from __future__ import annotations

import collections
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import jobpulse
from jobpulse.v1 import job_pb2

T = TypeVar("T")

SUMMARY_FIELDS = {
    job_pb2.CHUNK_STATE_PENDING: "pending",
    job_pb2.CHUNK_STATE_PROCESSING: "processing",
    job_pb2.CHUNK_STATE_COMPLETED: "completed",
    job_pb2.CHUNK_STATE_FAILED: "failed",
    job_pb2.CHUNK_STATE_CANCELLED: "cancelled",
}


def count_states(chunks: Iterable[job_pb2.Chunk]) -> dict[str, int]:
    """Chunks counted by state, keyed as chunks_summary's fields (``total`` too)."""
    counts = collections.Counter(SUMMARY_FIELDS[chunk.state] for chunk in chunks)
    out = {name: counts[name] for name in SUMMARY_FIELDS.values()}
    out["total"] = sum(counts.values())
    return out


def recount(client: jobpulse.Client, job_id: str) -> dict[str, int]:
    """Counts a job's chunks by state from ListJobChunks (all pages)."""
    return count_states(client.list_job_chunks(job_id, page_size=1000))


def summary_dict(summary: job_pb2.ChunksSummary) -> dict[str, int]:
    return {name: getattr(summary, name) for name in (*SUMMARY_FIELDS.values(), "total")}


def assert_summary_matches(client: jobpulse.Client, job_id: str) -> job_pb2.Job:
    """Asserts the job's chunks_summary equals a recount of its chunks and sums to total; returns the job."""
    job = client.get_job(job_id, view="basic")
    counted = recount(client, job_id)
    assert summary_dict(job.chunks_summary) == counted, f"job {job_id}: summary disagrees with its chunks"
    s = job.chunks_summary
    assert s.pending + s.processing + s.completed + s.failed + s.cancelled == s.total
    return job


def chunks_by_index(client: jobpulse.Client, job_id: str) -> dict[int, job_pb2.Chunk]:
    return {c.index: c for c in client.list_job_chunks(job_id, page_size=1000)}


def claim_one(client: jobpulse.Client, kind: str, worker: str = "w1", **kwargs: Any) -> Any:
    """Claims exactly one chunk of ``kind`` (failing the test if there is none) and returns the claim."""
    claims = client.claim_chunks(worker, kinds=[kind], max_chunks=1, **kwargs)
    assert len(claims) == 1, f"expected one claim of kind {kind!r}, got {len(claims)}"
    return claims[0]


def run_all(client: jobpulse.Client, kind: str, worker: str = "w1") -> int:
    """Claims and completes every claimable chunk of ``kind``; returns how many were completed."""
    done = 0
    while True:
        claims = client.claim_chunks(worker, kinds=[kind], max_chunks=100)
        if not claims:
            return done
        for claim in claims:
            client.complete_chunk(claim.chunk.id, claim.lease_token)
            done += 1


def check_all_summaries(client: jobpulse.Client) -> None:
    for job in client.list_jobs(page_size=100):
        assert_summary_matches(client, job.id)


class BackgroundThread:
    """Runs ``fn`` in a thread and re-raises its exception on ``join``."""

    def __init__(self, fn: Callable[[], Any], name: str = "e2e-helper") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 20.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background thread did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result


def popen_interruptible(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Starts ``argv`` as a terminal would: SIGINT raises KeyboardInterrupt in it.

    A child of a shell running in the background inherits SIGINT ignored, and Python then leaves it
    ignored. ``preexec_fn`` could reset it, but it makes subprocess fork() this process, whose gRPC threads
    may hold locks at that moment (the child then hangs or prints poller errors before its exec). A caught
    signal is reset to its default by exec, so the test process catches SIGINT while it starts the child.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(argv, text=True, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


class PipelineOrder:
    """Watches a PER_CHUNK pipeline (``stage2`` after ``stage1``) while it runs, every 20 ms from a thread
    of its own: a chunk of stage 2 that has started (not PENDING) while its stage-1 chunk has not
    COMPLETED, or a finalize chunk started before every other chunk of its job COMPLETED, is a breach.
    Stage 2 is read first, stage 1 after: a chunk started at the first read had, if the rule holds, its
    stage-1 chunk completed before it, so the second read sees it completed. Calls that fail (a server
    being killed) are passed over."""

    def __init__(self, address: str, stage1: str, stage2: str) -> None:
        self.address, self.stage1, self.stage2 = address, stage1, stage2
        self.breaches: list[str] = []
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                with jobpulse.Client(self.address, timeout=5) as client:
                    while not self._stop.wait(0.02):
                        self._look(client)
            except jobpulse.errors.JobpulseError:
                continue

    def _look(self, client: jobpulse.Client) -> None:
        second = list(client.get_job(self.stage2).chunks)
        done1 = {
            c.index for c in client.get_job(self.stage1).chunks if c.state == job_pb2.CHUNK_STATE_COMPLETED
        }
        started = [c for c in second if c.state != job_pb2.CHUNK_STATE_PENDING]
        early = [c.index for c in started if not c.finalize and c.index not in done1]
        if early:
            self.breaches.append(f"stage-2 chunks {early} started before their stage-1 chunks completed")
        if any(c.finalize for c in started) and any(
            c.state != job_pb2.CHUNK_STATE_COMPLETED for c in second if not c.finalize
        ):
            self.breaches.append("the finalize chunk started before the others completed")
        self.looks += 1

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return self.breaches
