"""Bulk operations over a filter: CancelJobs, RetryJobs, PurgeJobs.

A call counts the jobs its filters match, stores the operation (domain/bulk.py) and returns it; a runner
on every replica takes up the operations not finished, oldest first, and works through each in batches:
one write transaction locks the operation's row, reads the ids of the next ``batch_size`` matching jobs
after its cursor (id order, which is creation order), acts on each (the very changes CancelJob, RetryJob
and DeleteJob make, through JobService's ``*_locked`` methods, webhooks and watchers included), and moves
the cursor and the counts, all in one commit. So a job is acted on at most once: a batch that does not
commit leaves the cursor where it was, and the next run (on this replica after a restart, or on another)
goes on from there. Only jobs created before the call are matched (the filter's ``created_before`` is
bounded by the call's time): a bulk cancel does not chase the jobs made after it.

The runner gives way between batches (``pause`` seconds, default a few milliseconds), so a large
operation does not hold the database's writer (SQLite) or the job rows long: calls and workers get in
between its batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from jobpulse_server.domain import ids
from jobpulse_server.domain.bulk import NAME_PREFIX, BulkAction, BulkOperation
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.errors import OperationNotDone, OperationNotFound
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Job
from jobpulse_server.domain.principal import Principal
from jobpulse_server.services import pagination
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.services.jobs import JobService
from jobpulse_server.services.latency import Ends
from jobpulse_server.store import Store, Tx

log = logging.getLogger("jobpulse.bulk")

# Jobs per batch (one transaction): large enough that the per-transaction cost is spread thin, small
# enough that one batch holds the writer for tens of milliseconds, not seconds.
BATCH_SIZE = 500
# Jobs an action writes at once within a batch (see ``step``).
WRITE_SIZE = 100
# Seconds the runner waits between two batches, for others' transactions to get in.
PAUSE_SECONDS = 0.002
# Seconds between two looks for operations other replicas started (or left when they stopped).
POLL_SECONDS = 5.0


class BulkService:
    """Starts, reads and runs bulk operations."""

    def __init__(
        self,
        store: Store,
        jobs: JobService,
        clock: Clock,
        *,
        batch_size: int = BATCH_SIZE,
        pause: float = PAUSE_SECONDS,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.batch_size = batch_size
        self.pause = pause
        self.poll = poll
        self._wake = asyncio.Event()
        # Set (and replaced) at each batch this replica commits: what wait() listens for.
        self._moved = asyncio.Event()
        # Called after each committed batch with the operation (tests and the waiters of WaitOperation).
        self.on_progress: Callable[[BulkOperation], None] | None = None

    async def start(
        self,
        who: Principal,
        action: BulkAction,
        f: JobFilter,
        *,
        reason: str = "",
        force: bool = False,
        validate_only: bool = False,
    ) -> BulkOperation:
        """Counts the jobs ``f`` matches among those ``who`` may see, and (unless ``validate_only``)
        stores the operation for the runners; returns it (``id`` empty when only validated)."""
        now = self.clock()
        f.owner = who.owner_filter
        # Only the jobs made before this call (ids and create times grow together).
        f.created_before = now + 1 if f.created_before is None else min(f.created_before, now + 1)
        op = BulkOperation(
            id="",
            owner=who.name,
            sees_all=who.owner_filter is None,
            action=action,
            filter=f,
            reason=reason,
            force=force,
            create_time=now,
            update_time=now,
        )
        if validate_only:
            async with self.store.read() as tx:
                op.matched = await tx.count_all_jobs(f)
            op.end_time = now
            return op
        op.id = ids.new_job_id()

        async def insert(tx: Tx) -> None:
            op.matched = await tx.count_all_jobs(f)
            await tx.insert_bulk(op)

        await self.store.write(insert)
        self._wake.set()
        log.info(
            "bulk %s %s started by %s: %d job(s) match", action.name.lower(), op.name, who.name, op.matched
        )
        return op

    async def get(self, who: Principal, name: str) -> BulkOperation:
        """The operation ``bulk-<id>`` as ``who`` may see it: its own, or any for a key that sees every
        owner; else OperationNotFound."""
        op_id = name.removeprefix(NAME_PREFIX)
        async with self.store.read() as tx:
            op = await tx.get_bulk(op_id)
        if op is None or (who.owner_filter is not None and op.owner != who.owner_filter):
            raise OperationNotFound(f"operation operations/{name} not found", name=f"operations/{name}")
        return op

    async def list_operations(
        self, who: Principal, page_size: int, page_token: str, done: bool | None = None
    ) -> tuple[list[BulkOperation], str]:
        """The operations ``who`` may see (its own, or every owner's for a key that sees them all),
        newest first, only those ended (``done``) or running (not ``done``) unless None: one page and
        the token of the next ('' after the last)."""
        filters = pagination.fingerprint({"done": done})
        after = pagination.decode_text(page_token, "bulk_operations", filters, 32)
        async with self.store.read() as tx:
            found = await tx.list_bulk(after, page_size + 1, who.owner_filter, done)
        token = ""
        if len(found) > page_size:
            found = found[:page_size]
            token = pagination.encode("bulk_operations", filters, [found[-1].id])
        return found, token

    async def cancel(self, who: Principal, name: str) -> BulkOperation:
        """Stops the operation where it is (CancelOperation): what its batches did stays done. Stopping
        one that has ended changes nothing."""
        op_id = (await self.get(who, name)).id

        async def body(tx: Tx) -> BulkOperation | None:
            op = await tx.get_bulk(op_id, lock=True)
            if op is not None and not op.finished:
                op.end_time = op.update_time = self.clock()
                op.cancelled = True
                await tx.save_bulk(op)
            return op

        op = await self.store.write(body)
        if op is None:
            raise OperationNotFound(f"operation operations/{name} not found", name=f"operations/{name}")
        self._notify(op)
        return op

    async def delete(self, who: Principal, name: str) -> None:
        """Forgets an operation that has ended (DeleteOperation); one still running is OperationNotDone."""
        op = await self.get(who, name)
        if not op.finished:
            raise OperationNotDone(
                f"operation operations/{name} is still running and DeleteOperation does not stop it: "
                "CancelOperation first, then delete it",
                name=f"operations/{name}",
            )

        async def body(tx: Tx) -> None:
            await tx.delete_bulk(op.id)

        await self.store.write(body)

    async def wait(self, who: Principal, name: str, timeout: float) -> BulkOperation:
        """The operation once it has ended, or as it stands after ``timeout`` seconds (WaitOperation).
        Woken by each batch this replica commits; an operation another replica runs is looked at every
        half second."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            moved = self._moved
            op = await self.get(who, name)
            left = deadline - loop.time()
            if op.finished or left <= 0:
                return op
            try:
                await asyncio.wait_for(moved.wait(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    def _notify(self, op: BulkOperation) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        if self.on_progress is not None:
            self.on_progress(op)

    # --- the runner ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Works through the operations not finished until ``stop`` is set; woken at once by an operation
        started here, and every ``poll`` seconds for those started elsewhere (or left by a replica that
        stopped)."""
        passes = FailingPasses("bulk operations", log)
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_pending(stop)
                passes.worked()
            except Exception as exc:  # the database away, or a bug: try again at the next pass
                passes.failed(exc)
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def run_pending(self, stop: asyncio.Event | None = None) -> int:
        """Runs every operation not finished to its end (or until ``stop``); returns how many ended."""
        async with self.store.read() as tx:
            running = await tx.running_bulk()
        ended = 0
        for op_id in running:
            while stop is None or not stop.is_set():
                op = await self.step(op_id)
                if op is None or op.finished:
                    ended += op is not None
                    break
                if self.pause:
                    await asyncio.sleep(self.pause)
        return ended

    async def step(self, op_id: str) -> BulkOperation | None:
        """One batch of the operation, in one transaction: acts on the next jobs after its cursor and
        moves the cursor; ends it when none is left. None if it is gone."""
        ends = Ends()

        async def body(tx: Tx) -> BulkOperation | None:
            ends.clear()
            op = await tx.get_bulk(op_id, lock=True)
            if op is None or op.finished:
                return op
            now = self.clock()
            # The batch's jobs, read and locked by one statement (the filter holds at the lock: a job
            # changed meanwhile by another transaction is read as that one left it).
            batch = await tx.bulk_batch(op.filter, op.cursor, self.batch_size)
            # A few writes for the batch, each of up to WRITE_SIZE jobs (a cancel's chunks moved by one
            # statement, the jobs saved with their webhook events and change notices together);
            # between two, the event loop serves others (each write's Python work is a few
            # milliseconds, not tens).
            for start in range(0, len(batch), WRITE_SIZE):
                some = batch[start : start + WRITE_SIZE]
                acted = await self._act(tx, op, some, now, ends)
                op.done += acted
                op.skipped += len(some) - acted
            if batch:
                op.cursor = batch[-1].id
            if len(batch) < self.batch_size:
                op.end_time = now
            op.update_time = now
            await tx.save_bulk(op)
            return op

        op = await self.store.write(body)
        if self.jobs.latency is not None:
            self.jobs.latency.record(ends)
        if op is not None:
            if op.finished:
                log.info(
                    "bulk %s %s done: %d acted on, %d skipped",
                    op.action.name.lower(),
                    op.name,
                    op.done,
                    op.skipped,
                )
            self._notify(op)
        return op

    async def _act(self, tx: Tx, op: BulkOperation, jobs: list[Job], now: int, ends: Ends) -> int:
        """The operation's action on jobs it matched: how many it changed (the others: the action does
        not apply to them now, e.g. cancelling a job that has ended)."""
        if op.action == BulkAction.CANCEL:
            return len(await self.jobs.cancel_many(tx, jobs, op.reason, now, ends))
        if op.action == BulkAction.RETRY:
            return len(await self.jobs.retry_many(tx, jobs, now))
        return len(await self.jobs.delete_many(tx, jobs, op.force, now))
