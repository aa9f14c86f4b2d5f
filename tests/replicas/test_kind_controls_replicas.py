"""A kind's controls (UpdateKind) hold across two server replicas on one PostgreSQL database: the kind's
max_running_chunks is never exceeded over all its jobs (counted in the database every 10 ms while 16
workers on both replicas claim), and no chunk of a kind is claimed on either replica once UpdateKind
has paused it."""

from __future__ import annotations

import threading
from typing import Any

from replicas.test_claim_controls_replicas import _plain, _Sampler, _workers, no_claims_once_paused, replicas

import jobpulse
from jobpulse.v1 import job_pb2

__all__ = ["replicas"]  # the fixture, shared


def test_a_kinds_max_running_chunks_holds_across_replicas(
    replicas: tuple[Any, Any], database_url: str
) -> None:
    a, _ = replicas
    with jobpulse.Client(a.address) as client:
        client.update_kind("kind-cap-replicas", max_running_chunks=3)
        jobs = [client.create_job("kind-cap-replicas", 100, chunk_size=1) for _ in range(3)]
        sampler = _Sampler(_plain(database_url), "kind-cap-replicas", column="kind")
        stop = threading.Event()
        threads = _workers(replicas, "kind-cap-replicas", 8, stop)
        try:
            finals = [client.wait(job.id, timeout=120) for job in jobs]
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            counts = sampler.stop()

    assert all(f.state == job_pb2.JOB_STATE_COMPLETED for f in finals)
    assert len(counts) > 10 and max(counts) == 3, (len(counts), max(counts))


def test_no_claim_of_a_paused_kind_after_update_kind_returns(
    replicas: tuple[Any, Any], database_url: str
) -> None:
    no_claims_once_paused(
        replicas,
        database_url,
        "kind-pause-replicas",
        lambda client, job: client.update_kind("kind-pause-replicas", paused=True),
    )
