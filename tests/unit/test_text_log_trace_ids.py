"""The text log form carries a span's ids as the JSON form does (the record factory stamps them)."""

from __future__ import annotations

import logging
import sys

from jobpulse_server.platform.logs import TextFormatter


def _record(message: str, **extra: str) -> logging.LogRecord:
    record = logging.LogRecord("jobpulse.rpc", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_made_inside_a_span_ends_with_its_ids() -> None:
    line = TextFormatter().format(
        _record(
            "CreateJob OK 1.2 ms", trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331"
        )
    )
    ids = "trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331"
    assert line.endswith(f"INFO jobpulse.rpc: CreateJob OK 1.2 ms {ids}")


def test_a_line_made_outside_a_span_is_as_before() -> None:
    line = TextFormatter().format(_record("sweep done"))
    assert line.endswith("INFO jobpulse.rpc: sweep done") and "trace_id" not in line


def test_the_ids_stay_on_the_messages_line_above_a_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", trace_id="ab" * 16, span_id="cd" * 8)
        record.exc_info = sys.exc_info()
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith(f"failed trace_id={'ab' * 16} span_id={'cd' * 8}")
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"
