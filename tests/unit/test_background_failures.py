"""Background loops log a run of failed passes once, then sparingly, then its end (not a traceback a
second for as long as the database is away)."""

from __future__ import annotations

import logging

import pytest
from support.clock import FakeSeconds

from jobpulse_server.domain.errors import DatabaseUnavailable
from jobpulse_server.services.background import FailingPasses

LOG = logging.getLogger("test.background")


def _fail(passes: FailingPasses, exc: Exception) -> None:
    try:
        raise exc
    except Exception as caught:
        passes.failed(caught)


def test_a_database_outage_is_one_line_then_one_a_minute_then_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeSeconds(0.0)
    passes = FailingPasses("sweep", LOG, clock=clock)
    caplog.set_level(logging.INFO, logger=LOG.name)
    for _ in range(120):  # two minutes of a pass a second
        _fail(passes, DatabaseUnavailable("the database is unavailable; retry shortly"))
        clock.now += 1.0
    passes.worked()
    passes.worked()  # a second working pass says nothing more
    records = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [level for level, _, _ in records] == ["WARNING", "WARNING", "INFO"]  # first, at 60 s, end
    assert records[0][1] == "sweep paused: the database is unavailable; retry shortly; retrying every pass"
    assert records[0][2] is None  # no traceback for an outage the calls and health report already
    assert records[1][1].startswith("sweep still failing: 61 passes over 60s")
    assert records[2][1] == "sweep works again after 120 failed passes over 120s"


def test_anything_else_is_logged_with_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeSeconds(0.0)
    passes = FailingPasses("expiry sweep", LOG, clock=clock)
    caplog.set_level(logging.INFO, logger=LOG.name)
    _fail(passes, RuntimeError("a bug"))
    clock.now += 1.0
    _fail(passes, RuntimeError("a bug"))
    [record] = caplog.records
    assert (record.levelname, record.getMessage()) == ("ERROR", "expiry sweep failed")
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    passes.worked()
    assert caplog.records[-1].getMessage() == "expiry sweep works again after 2 failed passes over 1s"


def test_the_drivers_own_tracebacks_fold_into_their_line() -> None:
    from jobpulse_server.platform.logs import DriverNoise

    try:
        raise ConnectionRefusedError("connect call failed\n  twice")
    except ConnectionRefusedError:
        import sys

        record = logging.LogRecord(
            "asyncpg.pool",
            logging.WARNING,
            "pool.py",
            1,
            "Failed to restore the pool connection floor; %s",
            ("retrying",),
            sys.exc_info(),
        )
    assert DriverNoise().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == (
        "Failed to restore the pool connection floor; retrying: "
        "ConnectionRefusedError: connect call failed twice"
    )
    ours = logging.LogRecord("jobpulse_server.x", logging.ERROR, "x.py", 1, "bug", None, (None, None, None))
    assert DriverNoise().filter(ours) and ours.getMessage() == "bug"  # our own records keep theirs
