"""The log writer: records handed over on the event loop are formatted and written on its thread, in
order, a batch at a time; stop() writes what is left."""

from __future__ import annotations

import io
import logging
import threading

from jobpulse_server.platform.logs import HandOff, LogWriter


def _logger(writer: LogWriter, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers[:] = [HandOff(writer)]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def test_every_record_is_written_in_order_by_stop() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    writer = LogWriter(handler, interval=3600)  # only stop() (or a warning) drains
    log = _logger(writer, "test.log_writer.order")
    for i in range(500):
        log.info("call %d", i)
    writer.stop()
    assert out.getvalue().splitlines() == [f"INFO call {i}" for i in range(500)]


def test_a_warning_is_written_without_waiting_for_the_interval() -> None:
    written = threading.Event()

    class Stream(io.StringIO):
        def flush(self) -> None:
            if "WARNING" in self.getvalue():
                written.set()

    out = Stream()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    writer = LogWriter(handler, interval=3600)
    log = _logger(writer, "test.log_writer.warning")
    try:
        log.info("quiet")
        log.warning("loud")
        assert written.wait(30), "the warning waited for the interval"
        assert out.getvalue().splitlines() == ["INFO quiet", "WARNING loud"]
    finally:
        writer.stop()


def test_a_record_that_cannot_be_formatted_does_not_stop_the_others() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    writer = LogWriter(handler, interval=3600)
    log = _logger(writer, "test.log_writer.bad")
    log.info("before")
    log.info("bad %d", "not a number")
    log.info("after")
    writer.stop()
    assert out.getvalue().splitlines() == ["before", "after"]
    assert len(errors) == 1
