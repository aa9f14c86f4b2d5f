"""The PostgreSQL change notices a replica receives: its own are dropped before they are decoded (one
arrives per group-commit flush), every other replica's is decoded and published to the local hub."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from jobpulse_server.domain.changes import Changes, decode, encode, own_prefixes
from jobpulse_server.events.pg_listener import Listener

ME = "r-5f2c9a"


class Recorder:
    """Stands in for the change hub: keeps what was published."""

    def __init__(self) -> None:
        self.published: list[Changes] = []

    def publish(self, changes: Changes) -> None:
        self.published.append(changes)


def _as_sql_writes(replica: str, jobs: dict[str, int]) -> str:
    """A notice as the store's statements write it: json_build_object's text, spaces and all."""
    inner = ", ".join(f"{json.dumps(k)} : {v}" for k, v in jobs.items())
    return '{"r" : ' + json.dumps(replica) + ', "j" : { ' + inner + ' }, "d" : []}'


def _listener() -> tuple[Listener, Recorder]:
    hub = Recorder()
    return Listener("postgresql://jp@127.0.0.1:5432/test", hub, ME), hub  # type: ignore[arg-type]


def test_the_sql_form_decodes_like_the_python_form() -> None:
    sender, changes = decode(_as_sql_writes("other", {"j1": 4, "j2": 9}))
    assert sender == "other"
    assert changes.jobs == {"j1": 4, "j2": 9}


@pytest.mark.parametrize(
    "payload",
    [
        *encode(Changes(jobs={"j1": 3}, new_work=True), ME),
        _as_sql_writes(ME, {"j1": 3, "j2": 7}),
    ],
)
def test_own_notices_are_dropped_undecoded(payload: str, monkeypatch: Any) -> None:
    decoded: list[str] = []

    def counting(text: str) -> tuple[str, Changes]:
        decoded.append(text)
        return decode(text)

    monkeypatch.setattr("jobpulse_server.events.pg_listener.decode", counting)
    listener, hub = _listener()
    assert payload.startswith(own_prefixes(ME))
    listener._on_notify(None, 0, "jobpulse_changes", payload)
    assert hub.published == []
    assert decoded == []


@pytest.mark.parametrize("sender", ["r-5f2c9a0", "r-5f2c9", "other", 'r-5f2c9a"x'])
def test_other_replicas_notices_are_published_whatever_their_name(sender: str) -> None:
    """Names that share a beginning with this replica's are someone else's."""
    listener, hub = _listener()
    for payload in (*encode(Changes(jobs={"j1": 3}), sender), _as_sql_writes(sender, {"j1": 3})):
        assert not payload.startswith(own_prefixes(ME))
        listener._on_notify(None, 0, "jobpulse_changes", payload)
    assert [c.jobs for c in hub.published] == [{"j1": 3}, {"j1": 3}]


def test_a_malformed_notice_is_logged_and_dropped(caplog: Any) -> None:
    listener, hub = _listener()
    with caplog.at_level(logging.WARNING):
        listener._on_notify(None, 0, "jobpulse_changes", '{"r" : "other", "j" : ')
    assert hub.published == []
    assert "malformed change notification" in caplog.text
