"""The SDK's sync and async halves offer the same API: ``Client``/``AsyncClient``, ``Worker``/``AsyncWorker``
and ``Task``/``AsyncTask`` have the same public names, and each method the same parameters (names, kinds,
defaults) and annotations, once the async half's own words are read as the sync half's (``AsyncIterator``
as ``Iterator``, ``AsyncTask`` as ``Task``, ``asyncio.Event`` as ``threading.Event``, a ``grpc.aio``
channel as a ``grpc`` one). A method added to
one half only, or a parameter renamed or given another default in one of them, fails here.

Where the halves must differ, the async half awaits: every method of the async client that calls the
server is a coroutine or an async iterator, never a plain function that would block the event loop.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

import jobpulse

TWINS = [
    (jobpulse.Client, jobpulse.AsyncClient),
    (jobpulse.Worker, jobpulse.AsyncWorker),
    (jobpulse.Task, jobpulse.AsyncTask),
]

# The async half's words for the same thing, read as the sync half's.
_ASYNC_WORDS = re.compile(r"\bAsync(?=[A-Z])|\basyncio\.|\bthreading\.")


def _plain(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return _ASYNC_WORDS.sub("", text).replace("grpc.aio.", "grpc.")


def _public(cls: type) -> dict[str, Any]:
    return {name: getattr(cls, name) for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize(("sync", "asynchronous"), TWINS, ids=lambda c: c.__name__)
def test_the_twins_have_the_same_public_names(sync: type, asynchronous: type) -> None:
    assert sorted(_public(sync)) == sorted(_public(asynchronous))


@pytest.mark.parametrize(("sync", "asynchronous"), TWINS, ids=lambda c: c.__name__)
def test_each_method_takes_the_same_parameters(sync: type, asynchronous: type) -> None:
    methods = {name: value for name, value in _public(sync).items() if callable(value)}
    methods["__init__"] = sync.__init__
    assert len(methods) > 2
    for name, method in methods.items():
        mine = inspect.signature(method)
        theirs = inspect.signature(getattr(asynchronous, name))
        described = [(p.name, p.kind, p.default, _plain(p.annotation)) for p in mine.parameters.values()]
        twin = [(p.name, p.kind, p.default, _plain(p.annotation)) for p in theirs.parameters.values()]
        assert described == twin, f"{sync.__name__}.{name}{mine} vs {asynchronous.__name__}.{name}{theirs}"
        assert _plain(mine.return_annotation) == _plain(theirs.return_annotation), name


# The methods that return an iterator at once (checking their arguments there), whose pages or messages are
# awaited as they are read.
_ITERATORS = (
    "list_jobs",
    "list_job_chunks",
    "list_chunk_attempts",
    "list_kinds",
    "list_schedules",
    "list_bulk_operations",
    "export_jobs",
    "watch_job",
    "watch_jobs",
)


def test_the_async_client_never_blocks_the_loop() -> None:
    for name, method in _public(jobpulse.AsyncClient).items():
        if not callable(method) or name in _ITERATORS:
            continue
        assert inspect.iscoroutinefunction(method), name
    for name in _ITERATORS:
        method = getattr(jobpulse.AsyncClient, name)
        annotation = inspect.signature(method).return_annotation
        assert str(annotation).startswith("AsyncIterator["), (name, annotation)
        assert not inspect.iscoroutinefunction(method), name


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("list_jobs", {}),
        ("list_job_chunks", {"job_id": "j"}),
        ("export_jobs", {}),
        ("watch_jobs", {}),
    ],
)
def test_the_iterators_check_their_filters_when_called(name: str, args: dict[str, Any]) -> None:
    # A bad filter is an error of the call, not of the first step of the iteration, in either half.
    for cls in (jobpulse.Client, jobpulse.AsyncClient):
        client = cls("127.0.0.1:1")
        with pytest.raises(ValueError, match="no-such-state"):
            getattr(client, name)(states=["no-such-state"], **args)


def test_the_async_worker_awaits_what_the_worker_calls() -> None:
    for name, method in _public(jobpulse.AsyncWorker).items():
        if callable(method):
            assert inspect.iscoroutinefunction(method), name
