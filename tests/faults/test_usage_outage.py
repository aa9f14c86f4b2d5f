"""The usage flusher while the database is away: the server keeps serving (and counting), failed flushes
keep their counts, and once the database is back every call is in the stored totals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from support.faults import NOT_SERVING, Stubs
from support.polling import eventually
from test_database_outage import Outage

from jobpulse.v1 import job_service_pb2 as J
from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.services import keys


def _list_jobs(stubs: Stubs, key: str) -> str:
    try:
        stubs.jobs.ListJobs(J.ListJobsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=5)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name  # type: ignore[no-any-return]


def test_counts_made_while_the_database_is_away_are_written_once_it_is_back(
    make_server: Callable[..., Any], database_url: str
) -> None:
    srv = make_server(health_interval=0.2, key_refresh_interval=0.5, usage_flush_interval=0.1)
    alice = srv.call(keys.create_key(srv.app.db, "alice", "client"))
    srv.call(srv.app.auth.refresh())
    stubs = Stubs(srv.address)
    outage = Outage(srv, database_url)
    ledger = srv.app.usage
    try:
        assert [_list_jobs(stubs, alice) for _ in range(3)] == ["OK"] * 3
        eventually(lambda: srv.call(ledger.store.usage()).get("alice"), 10, "the first flush")
        outage.begin()
        try:
            eventually(stubs.health_status, 10, "health NOT_SERVING", expect=NOT_SERVING)
            failed = ledger.failed_flushes
            # The key is known from before: these are admitted (and counted), then fail on the database.
            during = [_list_jobs(stubs, alice) for _ in range(4)]
            assert during == ["UNAVAILABLE"] * 4
            eventually(lambda: ledger.failed_flushes >= failed + 2, 10, "two failed flushes")
            assert ledger.pending["alice"].calls == 4
        finally:
            outage.end()
        eventually(lambda: _list_jobs(stubs, alice), 10, "calls OK again", expect="OK")
        eventually(
            lambda: srv.call(ledger.store.usage())["alice"],
            10,
            "every call stored",
            expect=KeyUsage("client", 8, 0),
        )
    finally:
        stubs.close()
