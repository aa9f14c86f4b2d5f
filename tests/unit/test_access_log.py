"""The access log's two ways out write the same lines: the server's own logging (a LogWriter behind the
root logger's HandOff) takes the call's values to the writer's thread and makes the record there; any
other set-up (a log capture, another handler) gets the record through ``Logger.handle`` as before."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from jobpulse.v1 import worker_service_pb2
from jobpulse_server.platform import logs
from jobpulse_server.platform.logs import JsonFormatter, Observer, TextFormatter, log_off_the_loop
from jobpulse_server.platform.metrics import Metrics


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", "req-7"),)


REQUEST = worker_service_pb2.CompleteChunkRequest(chunk_id="01JOBID-12", lease_token="t")


@pytest.fixture
def server_logging() -> Iterator[None]:
    """The root logger as the server sets it up with tracing off (the standard record factory: a traced
    server, or an earlier test of one in this process, stamps records with trace ids), put back as it
    was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logs._hand_off, logging.getLogRecordFactory())
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logs._hand_off = saved[2]
        logging.setLogRecordFactory(saved[3])


def _lines(formatter: logging.Formatter, capture: logging.Handler | None = None) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    writer = log_off_the_loop(handler, logging.INFO)
    if capture is not None:
        logging.getLogger().addHandler(capture)
    try:
        direct = logs._access_writer() is writer
        Observer(Metrics()).record("CompleteChunk", "OK", 0.0, REQUEST, _Context())
    finally:
        if capture is not None:
            logging.getLogger().removeHandler(capture)
        writer.stop()
    assert direct == (capture is None)  # the values go straight to the writer only when it is alone
    return stream.getvalue().splitlines()


@pytest.mark.usefixtures("server_logging")
def test_text_lines_are_the_same_either_way() -> None:
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    direct = _lines(TextFormatter())
    standard = _lines(TextFormatter(), Capture())

    def shape(line: str) -> str:  # the time and the duration differ from call to call
        line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "<time> ", line)
        return re.sub(r" \d+\.\dms ", " <n>ms ", line)

    assert [shape(x) for x in direct] == [shape(x) for x in standard]
    assert [shape(x) for x in direct] == ["<time> INFO jobpulse.rpc: CompleteChunk OK <n>ms job=01JOBID"]
    # The capture saw the standard record, with the call's fields.
    assert [(r.method, r.code, r.job_id, r.request_id) for r in captured] == [  # type: ignore[attr-defined]
        ("CompleteChunk", "OK", "01JOBID", "req-7")
    ]


@pytest.mark.usefixtures("server_logging")
def test_json_lines_carry_the_same_fields_either_way() -> None:
    def fields(line: str) -> dict[str, Any]:
        out = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out.pop("time"))
        assert re.fullmatch(r"CompleteChunk OK [\d.]+ms job=01JOBID", out.pop("message"))
        assert out.pop("duration_ms") >= 0
        return out

    (direct,) = _lines(JsonFormatter())
    (standard,) = _lines(JsonFormatter(), logging.NullHandler())
    expected = {
        "level": "INFO",
        "logger": "jobpulse.rpc",
        "method": "CompleteChunk",
        "code": "OK",
        "job_id": "01JOBID",
        "request_id": "req-7",
    }
    assert fields(direct) == fields(standard) == expected


@pytest.mark.usefixtures("server_logging")
def test_a_record_made_later_keeps_the_time_the_call_ended() -> None:
    record = logs.access_record(1_700_000_000_123_456_789, "GetJob", "NOT_FOUND", 0.0042, "", "")
    assert record.created == pytest.approx(1_700_000_000.123456789)
    assert record.msecs == 123.0
    assert record.getMessage() == "GetJob NOT_FOUND 4.2ms"
    assert JsonFormatter().format(record).startswith('{"time":"2023-11-14T22:13:20.123Z"')


@pytest.mark.usefixtures("server_logging")
def test_records_stamped_with_trace_ids_take_the_standard_way() -> None:
    """Tracing on: the record factory reads the current span on the thread that logs, so the record must
    be made on the loop, not later on the writer's thread."""
    writer = log_off_the_loop(logging.NullHandler(), logging.INFO)  # type: ignore[arg-type]
    try:
        assert logs._access_writer() is writer
        logging.setLogRecordFactory(lambda *args, **kwargs: logging.LogRecord(*args, **kwargs))
        assert logs._access_writer() is None
    finally:
        writer.stop()
