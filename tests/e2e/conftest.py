"""Fixtures for the end-to-end tests: SDK clients bound to real servers.

Every client made through ``connect`` (the ``client`` fixture included) is checked at teardown: for each
job still on its server, ``chunks_summary`` must equal a recount of the chunks ListJobChunks returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from support.e2e import check_all_summaries

import jobpulse
from jobpulse.v1 import job_service_pb2_grpc


@pytest.fixture
def connect() -> Iterator[Callable[[Any], jobpulse.Client]]:
    """Opens SDK clients to servers; at teardown checks every job's summary and closes them."""
    opened: list[tuple[Any, jobpulse.Client]] = []

    def make(srv: Any) -> jobpulse.Client:
        c = jobpulse.Client(srv.address, timeout=20.0)
        opened.append((srv, c))
        return c

    yield make
    try:
        checked: set[int] = set()
        for srv, _ in opened:
            if srv.app is None or id(srv) in checked:
                continue
            checked.add(id(srv))
            with jobpulse.Client(srv.address, timeout=20.0) as fresh:
                check_all_summaries(fresh)
    finally:
        for _, c in opened:
            c.close()


@pytest.fixture
def client(server: Any, connect: Callable[[Any], jobpulse.Client]) -> jobpulse.Client:
    """A sync SDK client to the default ``server``."""
    return connect(server)


@pytest.fixture
def job_stub(server: Any) -> Iterator[job_service_pb2_grpc.JobServiceStub]:
    """The generated JobService stub on a plain channel, for what the SDK deliberately hides
    (page tokens of ListJobChunks, the raw end of a WatchJob stream)."""
    channel = grpc.insecure_channel(server.address)
    try:
        yield job_service_pb2_grpc.JobServiceStub(channel)
    finally:
        channel.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A hung end-to-end test fails after 60 s instead of stalling the whole run."""
    here = str(config.rootpath / "tests" / "e2e")
    for item in items:
        if str(item.path).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))
