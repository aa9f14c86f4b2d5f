"""The flushes of PostgreSQL's group commit: what one flush of the queues (queue.py) writes, in which
order, and how each caller's answer is read back from its statement's rows (the statements: sql.py).

Why: every completion and claim changes its job's row (counts, state, revision, change_seq), which is
wide, indexed (never a HOT update) and the one row every worker of a job queues on; each statement held
that row's lock through its own commit and WAL flush. One statement per flush gets better as workers are
added, since a flush takes everything queued while the one before it ran.

What it keeps: an acknowledgement follows the commit of its flush; each completion is fenced by its own
lease token and a stale one is refused alone (the statement leaves it out; the caller's transaction path
then says why); every chunk a flush changes carries a revision of its own job above the job's revision
before the flush (completions one each; a claim, one per worker), so "everything after R" resumes
exactly; one change_seq and one NOTIFY per flush. Lock order is every writer's: the jobs (by id), then
their chunks. A flush's completions and the claims that follow them are one statement; progress reports
are a statement of their own, written first, then the failures that put a chunk back to wait out its
backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jobpulse_server.store.statements as q
from jobpulse_server.domain.changes import CHANNEL, Changes
from jobpulse_server.domain.model import Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.work import Completed, Retried
from jobpulse_server.store.batch.queue import (
    MAX_GROUP,
    BatchQueue,
    QueuedClaim,
    QueuedCompletion,
    QueuedFailure,
    QueuedReport,
    _answer,
    _once_each,
)
from jobpulse_server.store.batch.sql import (
    FAIL_GROUP,
    PROGRESS_GROUP,
    claim_group_statement,
    complete_group,
    complete_then_claim,
    slots_given,
)
from jobpulse_server.store.caps import Caps
from jobpulse_server.store.holds import Holds
from jobpulse_server.store.owners import Owners
from jobpulse_server.store.rows import chunk_from_row, job_from_row
from jobpulse_server.store.waiting import PROMOTE_LIMIT, Waiting

log = logging.getLogger("jobpulse.store")


class _Runs(Protocol):
    replica_id: str
    waiting: Waiting
    owners: Owners
    holds: Holds
    caps: Caps

    async def statement(self, sql: str, params: Mapping[str, Any]) -> Sequence[Any] | None: ...

    async def statement_rows(self, sql: str, params: Mapping[str, Any]) -> list[Sequence[Any]]: ...

    def publish(self, changes: Changes) -> None: ...


class GroupCommit(BatchQueue):
    """The flusher of the worker path on PostgreSQL: each flush's items written by as few statements as
    they fit in."""

    def __init__(self, store: _Runs, progress_interval_us: int = 5_000_000, fair: bool = True) -> None:
        super().__init__()
        self.store = store
        # Fair share between owners in the claims' order (domain/model.py fair_order).
        self.fair = fair
        self.fair_now = fair  # this flush's: fair, and several owners have pending chunks
        self.releases_now = True  # this flush's: a PER_CHUNK dependant holds chunks (store/holds.py)
        # The least time between a job's job.progress webhook events (the outbox's, from the server's
        # webhook_progress_interval): a job with webhooks takes this path when a flush makes no event.
        self.progress_interval_us = progress_interval_us

    async def _flush(self, took: list[asyncio.Future[Any]]) -> None:
        """One flush: the queued progress reports, failures, completions and claims, as few statements as
        they fit in. ``took`` gets the future of each item it takes off the queues."""
        # Progress reports first: one queued before a completion of its chunk is written first.
        reports, self._reports = _once_each(self._reports)
        took += [r.done for r in reports]
        if reports:
            await self._settle(reports, self._write_reports(reports))
        # Then the failures: a chunk put back waits out its backoff, so no claim of this flush takes it.
        failures, self._failures = _once_each(self._failures)
        took += [f.done for f in failures]
        if failures:
            await self._settle(failures, self._write_failures(failures))
        # A second completion of a chunk (a caller's retry) waits for the next flush, where its
        # lease is found spent.
        completions, self._completions = _once_each(self._completions)
        took += [c.done for c in completions]
        taken = {id(c) for c in completions}
        # A claim waits for the flush that writes the last of its completions.
        ready = [all(id(a) in taken or a.done.done() for a in c.after) for c in self._claims]
        claims = [c for c, r in zip(self._claims, ready, strict=True) if r]
        self._claims = [c for c, r in zip(self._claims, ready, strict=True) if not r]
        took += [c.got for c in claims]
        # With the completions, in the same statement, the claims of one set of kinds that wait
        # for completions of this flush only (or none).
        if claims:
            await self._promote(max(c.now for c in claims))
            await self._look_at_owners()
            await self._look_at_caps()
        if completions:
            await self._look_at_holds()
        kinds = claims[0].kinds if completions and claims else None
        both = [c for c in claims if c.kinds == kinds and all(id(a) in taken for a in c.after)]
        if both:
            await self._settle([*completions, *both], self._write_both(completions, kinds or (), both))
            # Answered (claimed, or the statement failed and each caller has its error): done.
            # Not tried (a completion did not go through): claimed below, as before.
            claims = [c for c in claims if not c.got.done()]
        elif completions:
            await self._settle(completions, self._write_completions(completions))
        by_kinds: dict[tuple[str, ...], list[QueuedClaim]] = {}
        for c in claims:
            if c.if_done and not all(map(self._went_through, c.after)):
                if not c.got.done():
                    c.got.set_result(None)
                continue
            by_kinds.setdefault(c.kinds, []).append(c)
        for kinds, group in by_kinds.items():
            await self._settle(group, self._write_claims(kinds, group))

    async def _look_at_owners(self) -> None:
        """Before a flush's claims, with fair share on: whether several owners have pending chunks, looked
        up again when the last look is stale (store/owners.py); the claims use the fair statements only
        then (``self.fair_now``)."""
        owners = self.store.owners
        if self.fair and owners.stale():
            try:
                ((sole, several),) = await self.store.statement_rows(q.OWNERS_NOW, {})
            except Exception as exc:  # the claims' own statement meets the same trouble and reports it
                log.info("could not look at the owners with pending chunks: %s", exc)
                return
            owners.settle(sole, bool(several))
        self.fair_now = self.fair and owners.several

    async def _look_at_caps(self) -> None:
        """Before a flush's claims: which kinds have a max_running_chunks, looked up again when the last
        look is stale (store/caps.py); a claim that may take chunks of one locks their rows first."""
        caps = self.store.caps
        if caps.stale():
            try:
                ((kinds,),) = await self.store.statement_rows(q.CAPPED_NOW, {})
            except Exception as exc:  # the claims' own statement meets the same trouble and reports it
                log.info("could not look at the capped kinds: %s", exc)
                return
            caps.settle(kinds)

    async def _look_at_holds(self) -> None:
        """Before a flush's completions: whether a PER_CHUNK dependant holds chunks, looked up again when
        the last look is stale (store/holds.py); the completions' statements free such chunks only then
        (``self.releases_now``), and otherwise leave pipeline jobs to the transaction path."""
        holds = self.store.holds
        if holds.stale():
            try:
                ((found,),) = await self.store.statement_rows(q.PER_CHUNK_HOLDS, {})
            except Exception as exc:  # the completions' own statement meets the same trouble and reports it
                log.info("could not look for held chunks: %s", exc)
                return
            holds.settle(bool(found))
        self.releases_now = holds.any

    async def _promote(self, now: int) -> None:
        """Before a flush's claims: the chunks whose retry backoff has run out back into the claim order
        (store/waiting.py), in a statement of its own, when one is due or the last look is old."""
        waiting = self.store.waiting
        if not waiting.is_due(now):
            return
        waiting.begin(now)
        try:
            rows = await self.store.statement_rows(q.PG_PROMOTE, {"now": now, "limit": PROMOTE_LIMIT})
        except Exception as exc:  # the claims' own statement meets the same trouble and reports it
            log.info("could not move due retries back to the claim order: %s", exc)
            return
        promoted, next_due = rows[0]
        waiting.settle(promoted, next_due, now)

    def _common(self, now: int) -> dict[str, Any]:
        """The binds every flush statement shares: its clock, the NOTIFY channel, this replica, and the
        least time between a job's job.progress events."""
        return {
            "now": now,
            "channel": CHANNEL,
            "replica": self.store.replica_id,
            "interval": self.progress_interval_us,
        }

    async def _run_statement(self, statement: str, given: dict[str, Any]) -> list[Sequence[Any]]:
        rows = await self.store.statement_rows(statement, given)
        self.flushes += 1
        return rows

    async def _write_reports(self, items: list[QueuedReport]) -> None:
        rows = await self._run_statement(
            PROGRESS_GROUP,
            {
                **self._common(max(i.now for i in items)),
                "chunk_id": [i.chunk_id for i in items],
                "job_id": [i.job_id for i in items],
                "token": [i.token for i in items],
                "items": [i.items_done for i in items],
                "stage": [i.stage for i in items],
                "message": [i.message for i in items],
                "ext": [i.external_task_id for i in items],
                "lease": [i.lease_us for i in items],
            },
        )
        self.items += len(rows)
        results: dict[int, tuple[bool, int]] = {}
        revisions: dict[str, int] = {}
        for pos, revision, cancel_requested, lease_end in rows:
            results[pos] = (bool(cancel_requested), lease_end)
            revisions[items[pos - 1].job_id] = revision
        if revisions:
            self.store.publish(Changes(jobs=revisions))
        _answer(items, results)

    async def _write_failures(self, items: list[QueuedFailure]) -> None:
        rows = await self._run_statement(
            FAIL_GROUP,
            {
                **self._common(max(i.now for i in items)),
                "chunk_id": [i.chunk_id for i in items],
                "job_id": [i.job_id for i in items],
                "token": [i.token for i in items],
                "reason": [i.reason for i in items],
                "message": [i.message for i in items],
                "details": [i.details for i in items],
                "jitter": [i.jitter for i in items],
                "base": [i.backoff_s for i in items],
                "cap": [i.backoff_max_s for i in items],
            },
        )
        self.items += len(rows)
        results: dict[int, Retried] = {}
        revisions: dict[str, int] = {}
        later: list[float] = []
        for pos, next_attempt, delay_s, revision, kind, start, attempt, index, trace_parent in rows:
            results[pos] = Retried(next_attempt, revision, kind, start, attempt, index, trace_parent)
            revisions[items[pos - 1].job_id] = revision
            later.append(delay_s)
            # Committed waiting: the next claims promote it when due (store/waiting.py). The flusher
            # runs one flush at a time, so no promotion is under way to miss it.
            self.store.waiting.note(next_attempt)
        if revisions:
            self.store.publish(Changes(jobs=revisions, work_later=later))
        _answer(items, results)

    @staticmethod
    def _completions_given(items: list[QueuedCompletion]) -> dict[str, Any]:
        """The completions' binds: one entry each, and their artifacts as five arrays (the completion's
        position from 1, name, uri, media type, size, role)."""
        artifacts: list[list[Any]] = [[], [], [], [], [], []]
        for pos, item in enumerate(items, 1):
            for a in item.artifacts:
                for column, value in zip(
                    artifacts, (pos, a.name, a.uri, a.media_type, a.size_bytes, a.role), strict=True
                ):
                    column.append(value)
        return {
            "chunk_id": [i.chunk_id for i in items],
            "job_id": [i.job_id for i in items],
            "token": [i.token for i in items],
            "ext": [i.external_task_id for i in items],
            **dict(zip(("a_pos", "a_name", "a_uri", "a_media", "a_size", "a_role"), artifacts, strict=True)),
        }

    async def _write_completions(self, items: list[QueuedCompletion]) -> None:
        now = max(i.now for i in items)  # each caller's clock when it asked; the flush's is the latest
        rows = await self._run_statement(
            complete_group(self.releases_now), {**self._common(now), **self._completions_given(items)}
        )
        self._completed(items, [r[:11] for r in rows], now, rows[0][11] if rows else None)

    def _completed(
        self, items: list[QueuedCompletion], rows: Sequence[Sequence[Any]], now: int, released: Any = None
    ) -> None:
        """Answers the completions from their statement's rows (one per completion that went through).
        ``released``: the dependants whose chunks the completions freed (services/pipeline.py), as JSON
        of id -> revision, or None."""
        self.items += len(rows)
        revisions: dict[str, int] = {}
        results: dict[int, Completed] = {}
        ended: dict[str, Completed] = {}  # a job the flush left terminal: one of its completions
        for row in rows:
            (
                pos,
                job_state,
                revision,
                chunk_state,
                kind,
                count,
                start,
                attempt,
                created,
                index,
                trace_parent,
            ) = row
            one = Completed(
                JobState(job_state),
                revision,
                ChunkState(chunk_state),
                kind,
                count,
                start,
                now,
                attempt,
                created,
                ends_job=False,
                index=index,
                trace_parent=trace_parent,
            )
            results[pos] = one
            job_id = items[pos - 1].job_id
            revisions[job_id] = revision
            if one.job_state.terminal:
                ended.setdefault(job_id, one)
        for one in ended.values():
            one.ends_job = True
        changed, freed = _released(released)
        if revisions or changed:
            # Freed chunks are new work for this process's waiting claimers (NOTIFY told the others).
            self.store.publish(Changes(jobs={**revisions, **changed}, new_work=freed > 0))
        _answer(items, results)

    async def _write_claims(self, kinds: tuple[str, ...], asks: list[QueuedClaim]) -> None:
        now = max(a.now for a in asks)
        slots = [(a.worker_id, a.lease_us, n) for n, a in enumerate(asks, 1) for _ in range(a.limit)][
            :MAX_GROUP
        ]
        # The capped kinds it may take chunks of: their rows locked and running chunks counted first.
        locked = self.store.caps.among(kinds)
        given = {**self._common(now), "kinds": list(kinds), **slots_given(slots), "spin": str(now)}
        if locked:
            given["locked"] = locked
        rows = await self._run_statement(
            claim_group_statement(len(kinds), len(slots), self.fair_now, bool(locked)), given
        )
        row = rows[0]
        self._claimed(asks, row[0], row[1], row[2], row[3], row[5])

    def _claimed(
        self,
        asks: list[QueuedClaim],
        n_jobs: int,
        chunk_rows: Sequence[Any] | None,
        callers: Sequence[int] | None,
        job_rows: Sequence[Any] | None,
        dues: Sequence[int | None] | None,
    ) -> None:
        """Answers the claims from their statement's answer."""
        if not chunk_rows:
            # [] when no chunk was ready; None (each caller takes the general path) when it declined.
            for a in asks:
                if not a.got.done():
                    a.got.set_result([] if not n_jobs else None)
            return
        assert callers is not None and dues is not None
        jobs = {j.id: j for j in map(job_from_row, job_rows or ())}
        mine: dict[int, list[tuple[Job, Chunk]]] = {}
        for caller, chunk, due in zip(callers, map(chunk_from_row, chunk_rows), dues, strict=True):
            chunk.due_time = due
            mine.setdefault(caller, []).append((jobs[chunk.job_id], chunk))
        self.items += len(chunk_rows)
        self.store.publish(Changes(jobs={j.id: j.revision for j in jobs.values()}))
        for n, a in enumerate(asks, 1):
            if not a.got.done():
                a.got.set_result(mine.get(n, []))

    async def _write_both(
        self, items: list[QueuedCompletion], kinds: tuple[str, ...], asks: list[QueuedClaim]
    ) -> None:
        """The completions and then the claims (of these kinds, each after completions of this flush
        only) in one statement (sql.py ``complete_then_claim``). The claims are answered only if they were
        made: not when a completion did not go through (the flusher then claims as before)."""
        now_c = max(i.now for i in items)
        now_k = max(a.now for a in asks)
        slots = [(a.worker_id, a.lease_us, n) for n, a in enumerate(asks, 1) for _ in range(a.limit)][
            :MAX_GROUP
        ]
        given = {
            **self._common(now_c),
            **self._completions_given(items),
            **slots_given(slots),
            "spin": str(now_k),
            "kinds": list(kinds),
            "now_k": now_k,
            "now_c": now_c,
            "n": len(items),
        }
        # The capped kinds its claims may take chunks of: their rows locked and running chunks counted first.
        locked = self.store.caps.among(kinds)
        if locked:
            given["locked"] = locked
        rows = await self._run_statement(
            complete_then_claim(bool(kinds), len(slots), self.fair_now, self.releases_now, bool(locked)),
            given,
        )
        done_rows, tried, n_jobs, chunk_rows, claim_callers, job_rows, dues = rows[0][:7]
        self._completed(items, done_rows or (), now_c, rows[0][8])
        if tried:
            self._claimed(asks, n_jobs, chunk_rows, claim_callers, job_rows, dues)


def _released(released: Any) -> tuple[dict[str, int], int]:
    """What a completion statement freed (sql.py ``_RELEASED``, JSON or None): the dependants it changed
    on their own, id -> revision, and how many chunks."""
    if released is None:
        return {}, 0
    found = json.loads(released) if isinstance(released, (str, bytes)) else released
    return {str(k): int(v) for k, v in (found.get("j") or {}).items()}, int(found.get("n") or 0)
