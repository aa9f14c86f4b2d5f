"""End-to-end: fair share between owners (setting fair_share), on both databases, through a real server
with an API key per team and a worker key: a one-chunk job of team B created behind team A's big job is
claimed next, two busy teams take turns, and with fair_share off team A's job drains first. The setting
itself: a bad value is refused at start, naming the variable."""

from __future__ import annotations

from typing import Any

import pytest

import jobpulse
from jobpulse.v1 import worker_service_pb2
from jobpulse_server.platform.config import Config
from jobpulse_server.services import keys


def _key(srv: Any, name: str, role: str) -> str:
    key = srv.call(keys.create_key(srv.app.db, name, role))
    srv.call(srv.app.auth.refresh())
    return key


def _teams(srv: Any) -> tuple[jobpulse.Client, jobpulse.Client, jobpulse.Client]:
    return tuple(  # type: ignore[return-value]
        jobpulse.Client(srv.address, api_key=_key(srv, name, role), timeout=10)
        for name, role in (("team-a", "client"), ("team-b", "client"), ("pool", "worker"))
    )


def _owners_of_claims(worker: jobpulse.Client, kind: str, n: int, owner: dict[str, str]) -> str:
    """Claims one chunk at a time ``n`` times (keeping each running): whose job each came from."""
    out = ""
    for _ in range(n):
        [claim] = worker.claim_chunks("w1", kinds=[kind])
        out += owner[claim.job_id]
    return out


@pytest.mark.parametrize("fair_share", ["owner", "off"])
def test_a_small_job_of_another_team_is_claimed_next(make_server: Any, fair_share: str) -> None:
    srv = make_server(fair_share=fair_share)
    a, b, worker = _teams(srv)
    with a, b, worker:
        big = a.create_job("render", 500, chunk_size=1)
        first = worker.claim_chunks("w1", kinds=["render"])  # team A's job is running
        small = b.create_job("render", 1)
        later = b.create_job("render", 2, chunk_size=1)
        owner = {big.id: "a", small.id: "b", later.id: "b"}

        got = _owners_of_claims(worker, "render", 5, owner)

        # Owner: B has none running, so B's job goes next; then the team with fewer running each time
        # (a tie either way), all five kept running. Off: A's job, the oldest, drains first.
        if fair_share == "off":
            assert got == "aaaaa"
        else:
            assert got[0] == "b" and got.count("b") in (2, 3), got
            assert all(abs(1 + got[:n].count("a") - got[:n].count("b")) <= 1 for n in range(1, 6)), got
        assert first and first[0].job_id == big.id


def test_two_busy_teams_take_turns(make_server: Any) -> None:
    srv = make_server()
    a, b, worker = _teams(srv)
    with a, b, worker:
        job_a = a.create_job("encode", 40, chunk_size=1)
        job_b = b.create_job("encode", 40, chunk_size=1)
        owner = {job_a.id: "a", job_b.id: "b"}
        # Each claimed chunk completes with its next claimed in the same call (complete-and-claim): the
        # team that just finished one has the fewer running, so the teams alternate.
        next_one = worker_service_pb2.ClaimChunksRequest(worker_id="w1", kinds=["encode"], max_chunks=1)
        claims = worker.claim_chunks("w1", kinds=["encode"], max_chunks=2)
        seen = "".join(sorted(owner[c.job_id] for c in claims))
        for _ in range(10):
            nxt = []
            for c in claims:
                done = worker.complete_chunk(c.chunk.id, c.lease_token, claim_next=next_one)
                nxt += done.claims
            claims = nxt
            seen += "".join(sorted(owner[c.job_id] for c in claims))
        assert seen.count("a") == seen.count("b") == 11


def test_a_bad_fair_share_value_is_refused_naming_the_variable() -> None:
    with pytest.raises(
        ValueError, match="JOBPULSE_FAIR_SHARE / --fair-share: 'team' is not one of owner, off"
    ):
        Config(fair_share="team")
