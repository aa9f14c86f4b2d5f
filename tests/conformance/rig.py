"""The store's conformance rig: every driver mode and the in-memory FakeStore, the same seeded operations,
the same results. The topic files of this package (``test_store_*.py``) drive it, each with the operations of
its topic and the views those change; ``test_store_mixed.py`` drives every operation at once.

For each driver mode (SQLite on the event loop, SQLite on its dedicated thread, PostgreSQL through
asyncpg with its batched worker path, as the ``database_url`` and ``driver_mode`` fixtures provide them) and
a few seeds, a random but seeded sequence of service calls runs on two rigs built alike but for the store:
the real one, wired as ``app.create_server`` wires it (``SqlStore(url, on_commit=..., sqlite_on_loop=...,
progress_interval_us=...)``, the progress interval the outbox's), and ``FakeStore``; so every driver is held
to the fake, hence to each other. Both rigs read the same fake clock values. After every call its answer
(or the type and text of its error), what it published to the change hub and the chunk counters must be
equal, and so must every job as GetJob (FULL) shows it; at the end (and, where a topic asks, every few
steps) also the topic's views of the whole store (``END_VIEWS``): the outbox rows, the tombstones, ListJobs
under several filters and orders (every page), ListChunks, the WatchJobs feed and the stats.

What is made equal on purpose, so that the comparison does not depend on randomness or on an
order the SQL leaves open:

* job ids (and webhook delivery ids, which come from the same generator) are a deterministic
  sequence, restarted for each step at the same value on both rigs: ``ids.new_job_id`` is patched;
* lease tokens stay random (on PostgreSQL the group-committed claim makes them in SQL): each rig
  maps its tokens to handles (the n-th lease handed out), and results show handles, not tokens;
* the retry jitter is one value for each step, the same on both rigs: on PostgreSQL a retryable failure
  draws it for the batched path and, when the batch declines (a webhook event is due), again for the
  transaction path, where the fake draws once;
* ``expired_leases`` ties (chunks of one claim share their lease's end) have no defined order in
  the SQL (``ORDER BY lease_expire_time``), and the sweep's outcome depends on it (which chunk
  fails first sets the job's error_chunk_index, and draws which backoff); ``overdue_cancels`` has
  no ORDER BY at all (SQLite walks ix_jobs_state_priority_id once the table has rows, the fake
  goes by id), which decides the change_seq and delivery id each force-cancelled job gets. The
  real stores' answers to both are put in the fake's order (job id, then chunk index).

What is compared only where it is defined to be equal (see the fake's module docstring):

* ``change_seq`` and the change horizon: on SQLite the fake hands out the same numbers (one more
  than the largest); on PostgreSQL they are transaction ids, so there they are left out and the
  WatchJobs feed is compared as a set of entries, not in change order;
* a completion with claim_next on PostgreSQL is, by the group commit's contract, a completion and then
  a claim, each bumping the revision of the job it changes (see ``_complete_and_claim``), and
  CompleteChunks is each completion in turn, then the claim (``_grouped_complete_many``); the
  fake, like SqliteStore, does them in one transaction with one revision. There the fake runs
  the steps, and that call's publications are compared merged;
* total_size is exact below ``statements.COUNT_EXACT_UP_TO`` jobs, far above what this test makes, so
  it is compared; ``bumped`` is an in-memory flag of a copy and never leaves the process.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.clock import FakeClock
from support.fake_store import FakeStore, Tombstone

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.errors import DomainError, JobNotFound
from jobpulse_server.domain.filters import ORDERS, JobFilter
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobHead, JobState
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.domain.work import ClaimRequest, Completion, CompletionResult, Failure, ProgressReport
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.jobs import JobPage, JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.retention import RetentionService
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store import Store
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.statements import OUTBOX_COLUMNS

SEEDS = [11, 22, 33, 44, 55]
STEPS = 100
START = 1_700_000_000_000_000
BOB = Principal("bob", sees_all=False, role="client")
HOOK = "https://hooks.example/parity"
MISSING_JOB = "0PAR" + "9" * 22  # a well-formed id no job has
CHUNK_EVENTS = ("claimed", "completed", "cancelled", "failed", "retried", "rescued")
# The webhook URLs a create picks from (besides, sometimes, a URL that is not http): mostly none.
WEBHOOK_URLS = ("", "", "", HOOK, HOOK)


def render(job: Job, now: int) -> dict[str, Any]:
    """A webhook body's job: enough of it to tell the two rigs' events apart."""
    return {
        "id": job.id,
        "state": job.state.name,
        "revision": job.revision,
        "items_done": job.items_done,
        "summary": dataclasses.asdict(job.summary),
        "error": [job.error_reason, job.error_chunk_index],
        "now": now,
    }


@dataclass
class Rig:
    """The services over one store; ``db`` is None for the fake."""

    name: str
    store: Store
    hub: ChangeHub
    clock: FakeClock
    metrics: Metrics
    workers: WorkerService
    jobs: JobService
    expiry: RetentionService
    db: SqlStore | None = None
    fake: FakeStore | None = None
    published: list[Changes] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # handle -> this rig's lease token
    handles: dict[str, int] = field(default_factory=dict)  # lease token -> handle

    def token(self, handle: int) -> str:
        return self.tokens[handle]

    def register(self, token: str) -> int:
        self.handles[token] = len(self.tokens)
        self.tokens.append(token)
        return self.handles[token]

    def counters(self) -> dict[str, float]:
        get = self.metrics.registry.get_sample_value
        return {e: get("jobpulse_chunks_total", {"event": e}) or 0.0 for e in CHUNK_EVENTS}


# The least time between a job's job.progress events, for the outbox and the store alike (as create_server
# wires them): none, so every save of a running job with webhook_progress makes an event.
PROGRESS_US = 0


def _config() -> Config:
    return Config(
        retry_backoff=2.0,
        retry_backoff_max=8.0,
        cancel_deadline=30.0,
        webhook_secret="whsec_cGFyaXR5IHRlc3Qgc2lnbmluZyBrZXk=",
        max_chunks_per_job=40,
        watch_min_interval=0.0,
        # Expiry within the run's time span (ticks of 0.5 to 61 s): COMPLETED jobs after 40 s,
        # FAILED after 90 s, CANCELLED kept; tombstones trimmed after 120 s. The webhook outbox has
        # no fake (KeysAndDeliveries), so delivery records are kept.
        retention_completed=40.0,
        retention_failed=90.0,
        retention_cancelled=0.0,
        tombstone_retention=120.0,
        webhook_delivery_retention=0.0,
    )


def _services(name: str, store: Store, hub: ChangeHub, clock: FakeClock) -> Rig:
    config = _config()
    outbox = Outbox(render, PROGRESS_US)  # every save of a running job with webhook_progress makes an event
    metrics = Metrics()
    workers = WorkerService(store, hub, outbox, config, clock, metrics)
    jobs = JobService(store, outbox, config, clock)
    # webhook_delivery_retention is 0: the expiry sweep never trims deliveries (the fake has none).
    expiry = RetentionService(store, config, clock)
    return Rig(name, store, hub, clock, metrics, workers, jobs, expiry)


@asynccontextmanager
async def real_rig(url: str, clock: FakeClock, on_loop: bool) -> AsyncIterator[Rig]:
    """The real store, wired as create_server wires it."""
    hub = ChangeHub()
    published: list[Changes] = []

    def on_commit(changes: Changes) -> None:
        published.append(changes)
        hub.publish(changes)

    db = SqlStore(url, on_commit=on_commit, sqlite_on_loop=on_loop, progress_interval_us=PROGRESS_US)
    await db.start()
    try:
        rig = _services(f"real/{db.kind}/{'loop' if on_loop else 'thread'}", db, hub, clock)
        rig.db, rig.published = db, published
        yield rig
    finally:
        hub.close()
        await db.close()


@asynccontextmanager
async def fake_rig(clock: FakeClock) -> AsyncIterator[Rig]:
    hub = ChangeHub()
    published: list[Changes] = []

    def on_commit(changes: Changes) -> None:
        published.append(changes)
        hub.publish(changes)

    store = FakeStore(on_commit=on_commit)
    try:
        rig = _services("fake", store, hub, clock)
        rig.fake, rig.published = store, published
        yield rig
    finally:
        hub.close()


# --- what the two rigs must agree on ------------------------------------------------------------


@dataclass
class View:
    """How results are turned into comparable values."""

    exact_seq: bool  # change_seq and horizons are defined to be equal (SQLite)
    # PostgreSQL: complete with claim_next is complete_one, then a claim (see _complete_and_claim).
    two_step_complete_and_claim: bool = False

    def job(self, job: Job) -> dict[str, Any]:
        d = dataclasses.asdict(job)
        d.pop("bumped")
        if not self.exact_seq:
            d.pop("change_seq")
        return d

    def chunk(self, rig: Rig, chunk: Chunk) -> dict[str, Any]:
        d = dataclasses.asdict(chunk)
        if chunk.lease_token is not None:
            d["lease_token"] = rig.handles.get(chunk.lease_token, "<a token no claim handed out>")
        return d

    def page(self, rig: Rig, page: JobPage) -> dict[str, Any]:
        return {
            "job": self.job(page.job),
            "chunks": None if page.chunks is None else [self.chunk(rig, c) for c in page.chunks],
            "chunks_next_page_token": page.chunks_next_page_token,
            "delta_after": page.delta_after,
        }

    def claims(self, rig: Rig, claims: list[Any]) -> list[dict[str, Any]]:
        out = []
        for c in claims:
            handle = rig.register(c.lease_token)
            out.append(
                {
                    "handle": handle,
                    "chunk": self.chunk(rig, c.chunk),
                    "job": self.job(c.job),
                    "lease_expire_time": c.lease_expire_time,
                }
            )
        return out


def _changes(changes: Changes) -> dict[str, Any]:
    return {
        "jobs": dict(sorted(changes.jobs.items())),
        "deleted": sorted(changes.deleted),
        "new_work": changes.new_work,
        "work_later": changes.work_later,
        "webhooks": changes.webhooks,
    }


def _error(exc: Exception) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "text": str(exc),
        "metadata": getattr(exc, "metadata", None),
    }


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two nested values first differ (for the failure message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'real' if k in a else 'fake'}"
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path}: {len(a)} items (real) vs {len(b)} (fake)"
        return None
    return None if a == b else f"{path}: real {a!r} vs fake {b!r}"


def assert_same(real: Any, fake: Any, where: str) -> None:
    __tracebackhide__ = True
    if real != fake:
        diff = _first_difference(real, fake) or "(differ)"

        def short(v: Any) -> str:
            r = repr(v)
            return r if len(r) <= 3000 else r[:3000] + " ..."

        pytest.fail(
            f"{where}:\nthe real store and the fake differ at {diff}\n"
            f"real: {short(real)}\nfake: {short(fake)}",
            pytrace=False,
        )


# --- the operations -----------------------------------------------------------------------------


# Every operation at once, and how often each is picked (the mix of test_store_mixed.py).
MIXED: dict[str, int] = {
    "create": 11,
    "claim": 14,
    "progress": 8,
    "complete": 12,
    "complete_and_claim": 6,
    "complete_many": 5,
    "fail": 10,
    "stale": 4,
    "cancel": 7,
    "retry": 6,
    "update": 6,
    "delete": 4,
    "tick": 5,
    "sweep": 5,
    "expire": 4,
    "read": 5,
}


@dataclass
class Driver:
    """Picks the next operation from what the rigs agreed on so far (both got the same ids)."""

    rng: random.Random
    mix: dict[str, int]  # operation -> how often it is picked
    webhook_urls: tuple[str, ...] = WEBHOOK_URLS
    job_ids: list[str] = field(default_factory=list)
    chunk_ids: list[str] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)  # handle -> chunk id
    states: dict[str, JobState | None] = field(default_factory=dict)  # None: deleted
    deadlines: list[int] = field(default_factory=list)  # lease ends, retry times, cancel deadlines
    now: int = START

    def job(self, *wanted: JobState) -> str:
        """A job: mostly one in a ``wanted`` state (as the rigs agreed it is), else any, or none."""
        if not self.job_ids or self.rng.random() < 0.05:
            return MISSING_JOB
        fitting = [j for j in self.job_ids if self.states.get(j) in wanted]
        if fitting and self.rng.random() < 0.8:
            return self.rng.choice(fitting)
        recent = self.job_ids[-6:]
        return self.rng.choice(recent if self.rng.random() < 0.6 else self.job_ids)

    def who(self) -> Principal:
        return BOB if self.rng.random() < 0.15 else ANONYMOUS

    def lease(self) -> int | None:
        """A handle: mostly a recent one (likely still held), sometimes any (likely stale)."""
        if not self.leases:
            return None
        if self.rng.random() < 0.75:
            return self.rng.randrange(max(0, len(self.leases) - 6), len(self.leases))
        return self.rng.randrange(len(self.leases))

    def artifacts(self) -> list[tuple[str, str, str, int]]:
        n = self.rng.choice([0, 0, 1, 2])
        return [
            (f"out{i}", f"s3://bucket/{self.rng.randrange(1000)}", self.rng.choice(["", "text/csv"]), i * 7)
            for i in range(n)
        ]

    def claim_ask(self) -> dict[str, Any]:
        return {
            "worker": f"w{self.rng.randrange(3)}",
            "kinds": self.rng.choice([[], [], ["a"], ["b"], ["a", "b"]]),
            "limit": self.rng.choice([1, 1, 2, 3, 5]),
            "lease_us": self.rng.choice([5, 20, 600]) * 1_000_000,
        }

    def next(self) -> dict[str, Any]:
        r = self.rng
        kind = r.choices(list(self.mix), list(self.mix.values()))[0]
        if len(self.job_ids) < 4 and r.random() < 0.6:
            kind = "create"
        ended = [j for j, state in self.states.items() if state in (JobState.FAILED, JobState.CANCELLED)]
        if kind == "retry" and not ended and r.random() < 0.7:
            kind = "cancel"  # something to retry later
        handle = self.lease()
        if kind in ("progress", "complete", "complete_and_claim", "fail") and handle is None:
            kind = "claim"
        op: dict[str, Any] = {"op": kind}
        if handle is not None:
            op.update(handle=handle, chunk=self.leases[handle])
        if kind == "create":
            size = r.randint(1, 8)
            op.update(
                # bob's request ids must not find anonymous's jobs, nor the other way round
                who=BOB if r.random() < 0.3 else ANONYMOUS,
                kind=r.choice(["a", "b"]),
                total_items=r.choice([1, *(r.randint(1, 20) for _ in range(6)), 300]),  # 300: maybe too many
                chunk_size=size,
                max_attempts=r.randint(1, 3),
                priority=r.randint(0, 9),
                display_name=r.choice(["", "Alpha run", "beta", "ALPHA two"]),
                labels=r.choice([None, {"team": "red"}, {"team": "blue"}, {"team": "red", "env": "prod"}]),
                metadata=r.choice([None, {"n": r.randint(0, 9), "tag": "x"}]),
                request_id=r.choice(["", "", "req-1", "req-2"]),
                webhook_url=r.choice([*self.webhook_urls, "ftp://not-http" if r.random() < 0.3 else ""]),
                webhook_progress=r.random() < 0.5,
                # Mostly the default; 0 keeps the job; 10 s and 50 s expire within the run.
                ttl=r.choice([None, None, None, None, 0, 10_000_000, 50_000_000]),
            )
        elif kind == "claim":
            op.update(self.claim_ask())
        elif kind == "progress":
            op.update(
                items_done=r.randint(0, 9),
                stage=r.choice(["", "s1", "s2"]),
                message=r.choice(["", "working"]),
                external_task_id=r.choice(["", "task-x"]),
                lease_us=r.choice([None, None, 30_000_000]),
            )
        elif kind in ("complete", "complete_and_claim"):
            op.update(artifacts=self.artifacts(), external_task_id=r.choice(["", "t1"]))
            if kind == "complete_and_claim":
                op.update(next=self.claim_ask())
        elif kind == "complete_many":
            items = []
            for _ in range(r.randint(0, 3)):
                h = self.lease()
                choice = r.random()
                if h is None or choice < 0.1:
                    items.append({"chunk": r.choice([*self.chunk_ids, "no-such-chunk"]), "token": "bogus"})
                else:
                    items.append({"handle": h, "chunk": self.leases[h], "artifacts": self.artifacts()})
            op.update(items=items, next=self.claim_ask() if r.random() < 0.5 else None)
        elif kind == "fail":
            op.update(
                reason=r.choice(["", "IO", "BAD_INPUT"]),
                message=r.choice(["", "boom"]),
                retryable=r.random() < 0.6,
            )
        elif kind == "stale":
            # A lease that is (probably) not current, a wrong token, no token, or a chunk id that
            # names no job.
            variant = r.choice(["old", "wrong", "empty", "unknown"])
            if variant == "old" and self.leases:
                old = r.randrange(len(self.leases))
                op.update(handle=old, chunk=self.leases[old])
            else:
                op.update(handle=None, chunk=r.choice(self.chunk_ids) if self.chunk_ids else "nothing-0")
            op.update(variant=variant)
        elif kind in ("cancel", "retry", "delete"):
            running = (JobState.PENDING, JobState.PROCESSING, JobState.CANCELLING)
            ended = (JobState.FAILED, JobState.CANCELLED)
            target = {"cancel": running, "retry": ended, "delete": (*ended, JobState.COMPLETED)}[kind]
            op.update(who=self.who(), job=self.job(*target), reason="stop", force=r.random() < 0.5)
        elif kind == "update":
            op.update(
                who=self.who(),
                # Priority changes of ended jobs matter when they are retried.
                job=self.job(JobState.FAILED, JobState.CANCELLED, JobState.PENDING),
                priority=r.choice([None, r.randint(0, 9)]),
                labels=r.choice([None, {}, {"team": "blue"}, {"team": "red"}]),
                display_name=r.choice([None, "renamed", "Alpha run"]),
            )
        elif kind in ("tick", "sweep", "expire"):
            # Exactly onto a lease's end, a retry's time or a cancel deadline (the boundaries), past
            # a short lease (5 s, 20 s) or the cancel deadline (30 s), or a little.
            ahead = [t for t in self.deadlines if t > self.now]
            if ahead and r.random() < 0.35:
                us = r.choice(ahead[:3]) - self.now
            else:
                us = int(r.choice([0.5, 1, 3, 7, 21, 31, 61]) * 1e6)
            self.now += us
            op.update(us=us)
        elif kind == "read":
            op.update(
                variant=r.choice(["basic", "full", "known", "batch", "chunks"]),
                who=self.who(),
                job=self.job(),
                other=self.job(),
                states=r.choice([[], [ChunkState.PENDING], [ChunkState.PROCESSING, ChunkState.COMPLETED]]),
            )
        return op

    def learn(self, op: dict[str, Any], result: Any) -> None:
        """Notes the jobs and leases an agreed result made."""
        if not isinstance(result, dict) or "error" in result:
            return
        if op["op"] == "create":
            job = result["job"]
            if job["id"] not in self.job_ids:  # (a request_id repeated answers with an earlier job)
                self.job_ids.append(job["id"])
                self.chunk_ids += [c["id"] for c in result["chunks"] or []][:3]
        for claim in result.get("claims", []):
            assert claim["handle"] == len(self.leases)
            self.leases.append(claim["chunk"]["id"])

    def saw(self, jobs: dict[str, Any]) -> None:
        """Notes the jobs' states and the times at which something becomes due (as both rigs show
        them)."""
        self.states = {j: None if page is None else page["job"]["state"] for j, page in jobs.items()}
        due = set()
        for page in filter(None, jobs.values()):
            if page["job"]["cancel_time"] is not None:
                due.add(page["job"]["cancel_time"] + int(_config().cancel_deadline * 1e6))
            for c in page["chunks"]:
                due |= {c["lease_expire_time"], c["next_attempt_time"]} - {None}
        self.deadlines = sorted(due)


async def apply(rig: Rig, view: View, op: dict[str, Any]) -> Any:
    """Runs one operation on one rig; its answer or error, made comparable."""
    try:
        return await _apply(rig, view, op)
    except Exception as exc:  # compared like answers: the same error type and text on both
        return _error(exc)


async def _apply(rig: Rig, view: View, op: dict[str, Any]) -> Any:
    kind = op["op"]
    w, j = rig.workers, rig.jobs
    if kind == "create":
        req = NewJob(
            kind=op["kind"],
            total_items=op["total_items"],
            chunk_size=op["chunk_size"],
            max_attempts=op["max_attempts"],
            priority=op["priority"],
            display_name=op["display_name"],
            labels=op["labels"],
            metadata=op["metadata"],
            request_id=op["request_id"],
            webhook_url=op["webhook_url"],
            webhook_progress=op["webhook_progress"],
            ttl=op["ttl"],
        )
        return view.page(rig, await j.create_job(op["who"], req))
    if kind == "claim":
        claims = await w.claim(ClaimRequest(op["worker"], op["kinds"], op["limit"], op["lease_us"], 0))
        return {"claims": view.claims(rig, claims)}
    if kind == "progress":
        cancel, expires = await w.report_progress(
            ProgressReport(
                op["chunk"],
                rig.token(op["handle"]),
                items_done=op["items_done"],
                stage=op["stage"],
                message=op["message"],
                external_task_id=op["external_task_id"],
                lease_us=op["lease_us"] or 0,
            ),
        )
        return {"cancel_requested": cancel, "lease_expire_time": expires}
    if kind in ("complete", "complete_and_claim"):
        ask = None
        if kind == "complete_and_claim":
            n = op["next"]
            ask = ClaimRequest(n["worker"], n["kinds"], n["limit"], n["lease_us"], 0.0)
            if rig.fake is not None and view.two_step_complete_and_claim:
                return await _complete_and_claim(rig, view, op, ask)
        state, claims = await w.complete(
            Completion(op["chunk"], rig.token(op["handle"]), _artifacts(op), op["external_task_id"]),
            claim_next=ask,
        )
        return {"job_state": state, "claims": view.claims(rig, claims)}
    if kind == "complete_many":
        items = []
        for item in op["items"]:
            if "handle" in item:
                items.append(Completion(item["chunk"], rig.token(item["handle"]), _artifacts(item)))
            else:
                items.append(Completion(item["chunk"], item["token"], []))
        ask = None
        if op["next"] is not None:
            n = op["next"]
            ask = ClaimRequest(n["worker"], n["kinds"], n["limit"], n["lease_us"], 0.0)
        if rig.fake is not None and view.two_step_complete_and_claim:
            results, claims = await _grouped_complete_many(rig, items, ask)
        else:
            results, claims = await w.complete_many(items, ask)
        return {
            "results": [
                [r.chunk_id, None if r.error is None else _error(r.error), r.job_state] for r in results
            ],
            "claims": view.claims(rig, claims),
        }
    if kind == "fail":
        out = await w.fail(
            Failure(op["chunk"], rig.token(op["handle"]), op["reason"], op["message"], op["retryable"])
        )
        return dataclasses.asdict(out)
    if kind == "stale":
        variant = op["variant"]
        if variant == "old" and op["handle"] is not None:
            chunk_id, token = op["chunk"], rig.token(op["handle"])
        elif variant == "unknown":
            chunk_id, token = "not-a-chunk", "bogus"
        else:
            chunk_id, token = op["chunk"], "" if variant == "empty" else "not-the-token"
        state, claims = await w.complete(Completion(chunk_id, token, [Artifact("x", "s3://x")], ""))
        return {"job_state": state, "claims": view.claims(rig, claims)}
    if kind == "cancel":
        return view.page(rig, await j.cancel_job(op["who"], op["job"], op["reason"]))
    if kind == "retry":
        return view.page(rig, await j.retry_job(op["who"], op["job"]))
    if kind == "update":
        page = await j.update_job(
            op["who"],
            op["job"],
            priority=op["priority"],
            labels=op["labels"],
            display_name=op["display_name"],
        )
        return view.page(rig, page)
    if kind == "delete":
        await j.delete_job(op["who"], op["job"], op["force"])
        return {"deleted": op["job"]}
    if kind == "tick":
        return {"now": rig.clock()}
    if kind == "sweep":
        return {"moved": await w.sweep()}
    if kind == "expire":
        return dataclasses.asdict(await rig.expiry.sweep())
    if kind == "read":
        return await _read(rig, view, op)
    raise AssertionError(f"unknown operation {kind}")


async def _complete_and_claim(rig: Rig, view: View, op: dict[str, Any], ask: ClaimRequest) -> Any:
    """The fake's side of a completion with claim_next, as the PostgreSQL store defines it.

    ``store.batch.complete_and_claim`` (store/batch/) writes the completion and then the claim in
    one flush, each bumping the revision of the job it changes; when the claim would make a candidate
    job's webhook event, WorkerService.complete claims on the general path in a transaction of its own.
    Either way, when the completion is group-committed (``_group_declines``), it is a completion
    followed by a claim that sees it: a job whose
    chunk is completed and whose next chunk is claimed ends one revision further than on SQLite
    and the fake (no fast paths), which do both in one transaction with one revision. So the
    fake runs the two steps here; the publications of the step are compared merged (one or two).
    """
    job_id = chunk_job_id(op["chunk"])
    if _group_declines(rig, job_id, 1):
        # The group commit declines: the general path, as on the fake.
        state, claims = await rig.workers.complete(
            Completion(op["chunk"], rig.token(op["handle"]), _artifacts(op), op["external_task_id"]),
            claim_next=ask,
        )
        return {"job_state": state, "claims": view.claims(rig, claims)}
    state, _ = await rig.workers.complete(
        Completion(op["chunk"], rig.token(op["handle"]), _artifacts(op), op["external_task_id"])
    )
    claims = await rig.workers.claim(ask)
    return {"job_state": state, "claims": view.claims(rig, claims)}


async def _grouped_complete_many(
    rig: Rig, items: list[Completion], ask: ClaimRequest | None
) -> tuple[list[CompletionResult], list[Any]]:
    """The fake's side of CompleteChunks as the PostgreSQL store defines it (store/batch/): each
    completion the group commit takes is a change of its own, in the order asked; those it declines
    (``_group_declines``, a lease not current) then go through the general path in one transaction;
    then the claim. Every result gives its job's state after the call."""
    w = rig.workers
    asked = collections.Counter(chunk_job_id(i.chunk_id) for i in items)
    declined = {job_id for job_id, n in asked.items() if _group_declines(rig, job_id, n)}
    done: dict[int, JobState] = {}
    for n, item in enumerate(items):
        if chunk_job_id(item.chunk_id) in declined:
            continue
        try:
            done[n], _ = await w.complete(
                Completion(item.chunk_id, item.lease_token, item.artifacts, item.external_task_id)
            )
        except DomainError:
            continue
    rest = [i for n, i in enumerate(items) if n not in done]
    general, _ = await w.complete_many(rest, None) if rest else ([], [])
    by_rest = iter(general)
    results = [
        CompletionResult(i.chunk_id, None, done[n]) if n in done else next(by_rest)
        for n, i in enumerate(items)
    ]
    last = {chunk_job_id(r.chunk_id): r.job_state for r in results if r.error is None}
    results = [
        r if r.error is not None else CompletionResult(r.chunk_id, None, last[chunk_job_id(r.chunk_id)])
        for r in results
    ]
    claims = await w.claim(ask) if ask is not None else []
    return results, claims


def _group_declines(rig: Rig, job_id: str, asked: int) -> bool:
    """Whether PostgreSQL's group commit leaves a job's completions (``asked`` of them in the flush) to
    the general path (store/batch/sql.py ``_no_event``): a job it does not find, or one whose change makes a
    webhook event: it may end (no more chunks pending or running than completions asked) or a job.progress
    event is due (always, with PROGRESS_US 0, for a job that asked for them)."""
    assert rig.fake is not None and PROGRESS_US == 0
    if job_id not in rig.fake.job_ids:
        return True
    job = rig.fake.job(job_id)
    active = job.summary.pending + job.summary.processing
    return bool(job.webhook_url) and (job.webhook_progress or active <= asked)


def _merged(published: list[Changes]) -> list[Changes]:
    """The changes of several commits as one (what a watcher woken once would read)."""
    if not published:
        return []
    out = Changes()
    for c in published:
        for job_id, revision in c.jobs.items():
            out.jobs[job_id] = max(revision, out.jobs.get(job_id, 0))
        out.deleted |= c.deleted
        out.new_work |= c.new_work
        out.work_later += c.work_later
        out.webhooks |= c.webhooks
    return [out]


def _artifacts(op: dict[str, Any]) -> list[Artifact]:
    return [Artifact(n, u, m, s) for n, u, m, s in op["artifacts"]]


async def _read(rig: Rig, view: View, op: dict[str, Any]) -> Any:
    j, who, variant = rig.jobs, op["who"], op["variant"]
    if variant in ("basic", "full"):
        return view.page(rig, await j.get_job(who, op["job"], full=variant == "full"))
    if variant == "known":
        # The caller holds the chunks as of an earlier revision: only those changed since come back.
        page = await j.get_job(who, op["job"], full=True, known=lambda job: max(1, job.revision - 2))
        return view.page(rig, page)
    if variant == "batch":
        pages = await j.batch_get(who, [op["job"], op["other"]], full=True)
        return [view.page(rig, p) for p in pages]
    return await _chunk_pages(rig, view, who, op["job"], op["states"])


async def _chunk_pages(rig: Rig, view: View, who: Principal, job_id: str, states: list[ChunkState]) -> Any:
    """Every page of ListChunks, 4 at a time."""
    pages, token = [], ""
    while True:
        found, token, total = await rig.jobs.list_chunks(who, job_id, states, 4, token)
        pages.append({"chunks": [view.chunk(rig, c) for c in found], "token": token, "total": total})
        if not token:
            return pages


# --- the state at a point -----------------------------------------------------------------------

LISTINGS: list[tuple[Principal, JobFilter]] = [
    (ANONYMOUS, JobFilter()),
    (ANONYMOUS, JobFilter(states=[JobState.PENDING, JobState.PROCESSING, JobState.CANCELLING])),
    (ANONYMOUS, JobFilter(kind="a", min_priority=3)),
    (ANONYMOUS, JobFilter(labels={"team": "red"}, max_priority=7)),
    (ANONYMOUS, JobFilter(search="alpha")),
    (ANONYMOUS, JobFilter(created_after=START + 20_000_000)),
    (BOB, JobFilter()),
]


async def jobs_view(rig: Rig, view: View, job_ids: list[str]) -> dict[str, Any]:
    """Every job the run made, as GetJob (FULL) shows it: all its columns, its chunks with their
    artifacts, the job's artifacts."""
    out: dict[str, Any] = {}
    for job_id in job_ids:
        try:
            out[job_id] = view.page(rig, await rig.jobs.get_job(ANONYMOUS, job_id, full=True))
        except JobNotFound:
            out[job_id] = None
    return out


async def outbox_view(rig: Rig) -> list[Any]:
    """The webhook_deliveries rows, every column, in the order they were written (their ids come
    from the patched id sequence, so they sort by creation)."""
    if rig.fake is not None:
        rows = rig.fake.outbox_rows
    else:
        assert rig.db is not None
        async with rig.db.read() as tx:
            found = await tx.conn.fetch(
                f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM webhook_deliveries ORDER BY id"
            )
            rows = [dict(zip(OUTBOX_COLUMNS, r, strict=True)) for r in found]
    return [{**r, "payload": json.loads(r["payload"])} for r in rows]


async def tombstones_view(rig: Rig, view: View) -> list[Any]:
    if rig.fake is not None:
        rows = [dataclasses.asdict(t) for t in rig.fake.tombstones]
    else:
        assert rig.db is not None
        cols = [f.name for f in dataclasses.fields(Tombstone)]
        async with rig.db.read() as tx:
            found = await tx.conn.fetch(f"SELECT {', '.join(cols)} FROM job_tombstones")
            rows = [dict(zip(cols, r, strict=True)) for r in found]
    out = []
    for r in rows:
        labels = json.loads(r["labels"]) if isinstance(r["labels"], str) else r["labels"]
        out.append(
            {
                **r,
                "state": JobState(r["state"]),
                "labels": labels,
                "change_seq": r["change_seq"] if view.exact_seq else None,
            }
        )
    return sorted(out, key=lambda t: t["id"])


def _head_field(job: Job, name: str) -> Any:
    """The job's value of a JobHead field (n_pending and n_processing are its summary's counts)."""
    if name in ("n_pending", "n_processing"):
        return getattr(job.summary, name.removeprefix("n_"))
    return getattr(job, name)


def _known_half(head: Job | JobHead) -> int | None:
    """A caller that holds the encodings of about half the jobs (by a hash of the id), at their revision."""
    return head.revision if zlib.crc32(head.id.encode()) % 2 == 0 else None


async def listings_view(rig: Rig, view: View) -> list[Any]:
    """Every page of ListJobs (3 a page) for each listing and order; beside each page, the same page
    as ListJobs BASIC reads it for a caller holding half the jobs (heads first, the rest whole)."""
    out = []
    for who, f in LISTINGS:
        for order in ORDERS:
            token, pages = "", []
            while True:
                asked = token
                found, token, total, horizon = await rig.jobs.list_jobs(
                    who, dataclasses.replace(f), order_by=order, page_size=3, page_token=asked, full=False
                )
                kept, kept_token, kept_total, kept_horizon = await rig.jobs.list_kept_jobs(
                    who,
                    dataclasses.replace(f),
                    order_by=order,
                    page_size=3,
                    page_token=asked,
                    known=_known_half,
                )
                # No write between the two reads: the same page, each job a head exactly when held. On
                # PostgreSQL the horizon is the oldest transaction open anywhere in the cluster, which
                # another connection may end between the two reads.
                assert (kept_token, kept_total) == (token, total)
                assert kept_horizon == horizon or not view.exact_seq
                assert [k.id if isinstance(k, JobHead) else k.job.id for k in kept] == [
                    p.job.id for p in found
                ]
                for k, p in zip(kept, found, strict=True):
                    assert isinstance(k, JobHead) == (_known_half(p.job) == p.job.revision)
                    if isinstance(k, JobHead):
                        assert dataclasses.asdict(k) == {
                            name: _head_field(p.job, name) for name in dataclasses.asdict(k)
                        }
                    else:
                        assert view.job(k.job) == view.job(p.job)
                pages.append(
                    {
                        "jobs": [view.job(p.job) for p in found],
                        "heads": [dataclasses.asdict(k) for k in kept if isinstance(k, JobHead)],
                        "token": token,
                        "total": total,
                        "horizon": horizon if view.exact_seq else None,
                    }
                )
                if not token:
                    break
            out.append({"who": who.name, "filter": repr(f), "order": order, "pages": pages})
    return out


async def feed_view(rig: Rig, view: View) -> list[Any]:
    """The WatchJobs feed from the start: every job and tombstone, in change order on SQLite.

    On PostgreSQL the horizon is the oldest transaction still open anywhere in the cluster (another
    test's server, autovacuum): changes committed after it are held back, as they must be, until it
    ends. So read again until nothing committed lies beyond the horizon."""
    deadline = time.monotonic() + 30
    while True:
        async with rig.store.read() as tx:
            horizon = await tx.change_horizon()
            entries, beyond = await tx.changed_jobs(JobFilter(), (0, ""), horizon, 10_000)
        if not beyond:
            break
        assert time.monotonic() < deadline, "a transaction elsewhere held the change horizon for 30 s"
        await asyncio.sleep(0.02)
    out = [
        [e.change_seq if view.exact_seq else None, e.job_id, None if e.job is None else view.job(e.job)]
        for e in entries
    ]
    if not view.exact_seq:
        # PostgreSQL: change_seq is the transaction id (jobs saved together share it).
        out.sort(key=lambda e: (e[1], e[2] is None))
    return [horizon if view.exact_seq else None, out]


async def stats_view(rig: Rig) -> list[Any]:
    out = []
    for who, f in [(ANONYMOUS, JobFilter()), (ANONYMOUS, JobFilter(kind="b")), (BOB, JobFilter())]:
        overall, per_kind = await rig.jobs.stats(who, f)
        out.append([dataclasses.asdict(overall), [dataclasses.asdict(r) for r in per_kind]])
    return out


async def chunk_listings_view(rig: Rig, view: View, job_ids: list[str]) -> dict[str, Any]:
    """Every page of ListChunks of every job the run made, under a few state filters."""
    out: dict[str, Any] = {}
    for job_id in job_ids:
        for states in ([], [ChunkState.PENDING, ChunkState.FAILED], [ChunkState.COMPLETED]):
            try:
                pages = await _chunk_pages(rig, view, ANONYMOUS, job_id, states)
            except JobNotFound as exc:
                pages = _error(exc)
            out[f"{job_id} in {[s.name for s in states]}"] = pages
    return out


# The views of the whole store, by name: each reads one rig, given the ids of the jobs the run made.
EndView = Callable[[Rig, View, list[str]], Awaitable[Any]]
END_VIEWS: dict[str, EndView] = {
    "outbox rows": lambda rig, view, job_ids: outbox_view(rig),
    "tombstones": lambda rig, view, job_ids: tombstones_view(rig, view),
    "ListJobs": lambda rig, view, job_ids: listings_view(rig, view),
    "ListChunks": chunk_listings_view,
    "the WatchJobs feed": lambda rig, view, job_ids: feed_view(rig, view),
    "stats": lambda rig, view, job_ids: stats_view(rig),
}


# --- a run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """What a topic's test drives and compares."""

    mix: dict[str, int]  # the operations it picks from, and how often each
    views: tuple[str, ...]  # the END_VIEWS it compares at the end (every step: answers, publications, jobs)
    steps: int = 100
    every: int = 0  # also compare ``views`` after every this many steps (0: at the end only)
    webhook_urls: tuple[str, ...] = WEBHOOK_URLS


async def compare_views(
    real: Rig, fake: Rig, view: View, names: tuple[str, ...], job_ids: list[str], where: str
) -> None:
    """The named END_VIEWS of both rigs must be equal."""
    for name in names:
        read = END_VIEWS[name]
        assert_same(await read(real, view, job_ids), await read(fake, view, job_ids), f"{where}: {name}")


async def run(
    database_url: str, driver_mode: str, seed: int, restart: Callable[[int], None], topic: Topic
) -> None:
    """Drives ``topic.steps`` seeded operations on the real store and the fake, comparing as it goes.

    ``restart`` is the ``deterministic`` fixture: it restarts the id sequence and the jitter for a step."""
    assert driver_mode == "on-loop" or database_url.startswith("sqlite"), "the thread is a SQLite mode"
    assert set(topic.mix) <= set(MIXED) and set(topic.views) <= set(END_VIEWS)
    clocks = FakeClock(START), FakeClock(START)
    on_loop = driver_mode == "on-loop"
    async with real_rig(database_url, clocks[0], on_loop) as real, fake_rig(clocks[1]) as fake:
        assert real.db is not None
        view = View(exact_seq=real.db.kind == "sqlite", two_step_complete_and_claim=real.db.batch is not None)
        driver = Driver(random.Random(seed), topic.mix, topic.webhook_urls)
        for step in range(topic.steps):
            op = driver.next()
            where = f"seed {seed}, step {step}, {op}"
            if op["op"] in ("tick", "sweep", "expire"):
                for clock in clocks:
                    clock.now += op["us"]
                assert clocks[0].now == driver.now
            outcomes = []
            for rig in (real, fake):
                restart(step + 1)
                published = len(rig.published)
                result = await apply(rig, view, op)
                changes = rig.published[published:]
                if op["op"] in ("complete_and_claim", "complete_many") and view.two_step_complete_and_claim:
                    changes = _merged(changes)
                outcomes.append(
                    {
                        "result": result,
                        "published": [_changes(c) for c in changes],
                        "counters": rig.counters(),
                    }
                )
            assert_same(outcomes[0], outcomes[1], where)
            driver.learn(op, outcomes[0]["result"])
            jobs = await jobs_view(real, view, driver.job_ids)
            assert_same(jobs, await jobs_view(fake, view, driver.job_ids), f"{where}: the jobs afterwards")
            driver.saw(jobs)
            if topic.every and (step + 1) % topic.every == 0 and step + 1 < topic.steps:
                where = f"seed {seed}, after step {step}"
                await compare_views(real, fake, view, topic.views, driver.job_ids, where)

        # The end: everything the topic changes, through every read the services have of it.
        where = f"seed {seed}, after {topic.steps} steps"
        assert len(driver.job_ids) >= 5 and driver.leases, "the run made too little to compare"
        await compare_views(real, fake, view, topic.views, driver.job_ids, where)
