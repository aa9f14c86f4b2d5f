"""The ListOperations filter grammar (api/operation_filter.py): what it accepts and what it refuses."""

from __future__ import annotations

import pytest

from jobpulse_server.api.operation_filter import OperationFilter, parse_filter
from jobpulse_server.domain.model import JobState
from jobpulse_server.wire.validation import Checker

TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
RUNNING = frozenset({JobState.PENDING, JobState.PROCESSING, JobState.CANCELLING})


def _parse(text: str) -> OperationFilter:
    c = Checker()
    found = parse_filter(text, c)
    assert c.violations == [], c.violations
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", OperationFilter()),
        ("   ", OperationFilter()),
        ("done = true", OperationFilter(states=TERMINAL)),
        ("done=false", OperationFilter(states=RUNNING)),
        ("state = FAILED", OperationFilter(states=frozenset({JobState.FAILED}))),
        ('state = "job_state_cancelling"', OperationFilter(states=frozenset({JobState.CANCELLING}))),
        ('kind = "thumb nails"', OperationFilter(kind="thumb nails")),
        (r'kind = "say \"hi\" \\ bye"', OperationFilter(kind='say "hi" \\ bye')),
        ("kind = video.v2-x_y", OperationFilter(kind="video.v2-x_y")),
        (
            'done = false AND state = PENDING AND kind = "k"',
            OperationFilter(states=frozenset({JobState.PENDING}), kind="k"),
        ),
        ("done = true AND state = PENDING", OperationFilter(states=frozenset(), matches_nothing=True)),
        ("kind = a AND kind = b", OperationFilter(kind="b", matches_nothing=True)),
        ("kind = a AND kind = a", OperationFilter(kind="a")),
    ],
)
def test_accepted(text: str, expected: OperationFilter) -> None:
    found = _parse(text)
    assert (found.states, found.kind, found.matches_nothing, found.type) == (
        expected.states,
        expected.kind,
        expected.matches_nothing,
        "job",
    )


@pytest.mark.parametrize(
    ("text", "kind", "done", "nothing"),
    [
        ("type = job", "job", None, False),
        ("type = bulk", "bulk", None, False),
        ("type = bulk AND done = false", "bulk", False, False),
        ("done = true AND type = bulk", "bulk", True, False),
        ("type = bulk AND done = true AND done = false", "bulk", False, True),
        ("type = bulk AND type = job", "job", None, True),
        ("type = job AND state = FAILED", "job", None, False),
    ],
)
def test_type_picks_jobs_or_bulk_operations(text: str, kind: str, done: bool | None, nothing: bool) -> None:
    found = _parse(text)
    assert (found.type, found.done, found.matches_nothing) == (kind, done, nothing)


@pytest.mark.parametrize(
    "text",
    ["type = bulk AND kind = a", "state = FAILED AND type = bulk", "type = batch", 'type = "bulk"', "type ="],
)
def test_type_refusals(text: str) -> None:
    c = Checker()
    parse_filter(text, c)
    assert [v.field for v in c.violations] == ["filter"]


@pytest.mark.parametrize(
    "text",
    [
        "done",
        "done =",
        "done = maybe",
        'done = "true"',
        "state = RUNNING",
        "owner = alice",
        "done = true OR done = false",
        "done = true and done = false",
        "done = true AND",
        "NOT done = true",
        "kind != a",
        'kind = "a',
        'kind = ""',
        "kind = a b",
        "x" * 2000,
    ],
)
def test_refused_naming_the_filter_field(text: str) -> None:
    c = Checker()
    parse_filter(text, c)
    assert [v.field for v in c.violations] == ["filter"]
    assert c.violations[0].description
