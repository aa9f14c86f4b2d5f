"""ScheduleService use cases (create, read, list, update, delete, trigger) and the ticker that makes each
tick's job.

A schedule is seen by its owner and by keys that see every owner, as jobs are. Its template is a checked
CreateJob request (``NewJob``), kept as JSON; a tick makes the job as CreateJob would for the schedule's
owner, with the request_id ``schedules/<id>/<tick, RFC 3339>``.

Exactly one job per tick, however many replicas tick and however often they restart: a pass reads the
schedules due, makes each one's job (a tick made twice, by two replicas or by a pass cut short before it
moved the schedule on, finds the job of the first by its request_id), then moves the schedule on with a
compare-and-set on the next run it read, so two replicas never both move it. The ticker sleeps until the
earliest next run (at most ``POLL_SECONDS``, so it sees schedules other replicas made), and a local
create, update or delete wakes it at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobpulse_server.domain import ids
from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.errors import (
    DatabaseUnavailable,
    DomainError,
    FieldViolation,
    InvalidArgument,
    ScheduleNotFound,
)
from jobpulse_server.domain.model import Job
from jobpulse_server.domain.principal import Principal
from jobpulse_server.domain.schedules import (
    MISFIRE_RUN_ONCE,
    OVERLAP_ALLOW,
    OVERLAP_SKIP,
    Schedule,
    next_tick,
    plan,
    rfc3339,
    tick_request_id,
    trigger_request_id,
)
from jobpulse_server.platform.config import Config
from jobpulse_server.services import pagination
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.services.jobs import JobPage, JobService, NewJob
from jobpulse_server.store import Store, Tx

log = logging.getLogger(__name__)

# The longest the ticker sleeps: how soon it sees a schedule another replica made or changed.
POLL_SECONDS = 2.0
# After a failed pass (the database away), the ticker tries again this much later.
RETRY_SECONDS = 1.0
# Schedules served per read of the due ones, and reads per pass (a pass never loops for ever).
DUE_BATCH = 100
DUE_READS = 20
# Due schedules served at once (each a CreateJob and a compare-and-set: two write transactions).
SERVE_AT_ONCE = 8
# The jobs of a schedule the dashboard shows.
RECENT_JOBS = 5
# ListSchedules takes no filters: every token is issued for the same (empty) set.
_FILTERS = pagination.fingerprint({})
# The NewJob fields a template keeps (each tick sets its own request_id; a template has no schedule_time).
_TEMPLATE_FIELDS = tuple(
    f.name for f in dataclasses.fields(NewJob) if f.name not in ("request_id", "schedule_time")
)
# Where a template's problems are reported.
JOB_FIELD = "schedule.job"


@dataclass
class NewSchedule:
    """A checked CreateSchedule request."""

    cron: str
    job: NewJob
    display_name: str = ""
    time_zone: str = ""
    paused: bool = False
    misfire_policy: int = MISFIRE_RUN_ONCE
    overlap_policy: int = OVERLAP_ALLOW


@dataclass
class ScheduleChanges:
    """A checked UpdateSchedule request: the new value of each field named in its mask (None: kept)."""

    display_name: str | None = None
    cron: str | None = None
    time_zone: str | None = None
    job: NewJob | None = None
    paused: bool | None = None
    misfire_policy: int | None = None
    overlap_policy: int | None = None


def template_of(job: NewJob) -> dict[str, Any]:
    """A NewJob as a schedule keeps it (JSON)."""
    return {name: getattr(job, name) for name in _TEMPLATE_FIELDS}


def job_of(template: dict[str, Any], request_id: str = "") -> NewJob:
    """The NewJob of a kept template (fields it lacks take their defaults; unknown ones are dropped)."""
    known = {name: template[name] for name in _TEMPLATE_FIELDS if name in template}
    return NewJob(**known, request_id=request_id)


def owner_of(schedule: Schedule, key: Principal | None = None) -> Principal:
    """Who a schedule's jobs are made for: its owner, seeing only its own jobs, with the default webhook
    URL of ``key`` (the owner's active API key, if it has one) as a CreateJob of that key would have."""
    webhook_url = key.webhook_url if key is not None else ""
    return Principal(name=schedule.owner, sees_all=False, role="client", webhook_url=webhook_url)


def in_template(exc: InvalidArgument) -> InvalidArgument:
    """``exc`` with its fields named inside the schedule's template (``schedule.job.total_items``)."""
    return InvalidArgument([FieldViolation(f"{JOB_FIELD}.{v.field}", v.description) for v in exc.violations])


class ScheduleService:
    """The schedules use cases and the ticker, over the store's units of work."""

    def __init__(
        self,
        store: Store,
        jobs: JobService,
        config: Config,
        clock: Clock = now_us,
        *,
        key_named: Callable[[str], Principal | None] = lambda name: None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.config = config
        self.clock = clock
        # The active API key of a name (the authenticator's): a tick's job takes its owner's default
        # webhook URL from it, as of the tick.
        self.key_named = key_named
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Makes the ticker look at the schedules again now (a local change)."""
        self._wake.set()

    def _check_template(self, who: Principal, job: NewJob) -> None:
        try:
            self.jobs.check_new_job(who, job)
        except InvalidArgument as exc:
            raise in_template(exc) from None

    # --- the use cases ------------------------------------------------------------------------------

    async def create_schedule(self, who: Principal, new: NewSchedule) -> Schedule:
        """CreateSchedule: the schedule, its first tick the first time after now its cron names."""
        self._check_template(who, new.job)
        now = self.clock()
        schedule = Schedule(
            id=ids.new_job_id(),
            owner=who.name,
            cron=new.cron,
            job_template=template_of(new.job),
            display_name=new.display_name,
            time_zone=new.time_zone,
            paused=new.paused,
            misfire_policy=new.misfire_policy or MISFIRE_RUN_ONCE,
            overlap_policy=new.overlap_policy or OVERLAP_ALLOW,
            next_run_time=None if new.paused else next_tick(new.cron, new.time_zone, now),
            create_time=now,
            update_time=now,
        )
        await self.store.write(lambda tx: tx.insert_schedule(schedule))
        self.wake()
        return schedule

    async def get_schedule(self, who: Principal, schedule_id: str) -> Schedule:
        """GetSchedule: the schedule, if the caller may see it (else ScheduleNotFound)."""
        async with self.store.read() as tx:
            found = await tx.get_schedule(schedule_id, who.owner_filter)
        if found is None:
            raise ScheduleNotFound(schedule_id)
        return found

    async def list_schedules(
        self, who: Principal, page_size: int, page_token: str
    ) -> tuple[list[Schedule], str]:
        """ListSchedules: one page, oldest first, and the token of the next ('' after the last)."""
        after = pagination.decode_text(page_token, "schedules", _FILTERS, 32)
        async with self.store.read() as tx:
            found = await tx.list_schedules(after, page_size + 1, who.owner_filter)
        token = ""
        if len(found) > page_size:
            found = found[:page_size]
            token = pagination.encode("schedules", _FILTERS, [found[-1].id])
        return found, token

    async def update_schedule(self, who: Principal, schedule_id: str, changes: ScheduleChanges) -> Schedule:
        """UpdateSchedule: sets the fields given. A new cron expression or time zone, or a resume,
        counts the next tick from now; a pause clears it."""
        if changes.job is not None:
            self._check_template(who, changes.job)

        async def body(tx: Tx) -> Schedule:
            s = await tx.get_schedule(schedule_id, who.owner_filter, for_update=True)
            if s is None:
                raise ScheduleNotFound(schedule_id)
            now = self.clock()
            recount = False
            if changes.cron is not None and changes.cron != s.cron:
                s.cron, recount = changes.cron, True
            if changes.time_zone is not None and changes.time_zone != s.time_zone:
                s.time_zone, recount = changes.time_zone, True
            if changes.paused is not None:
                recount = recount or (s.paused and not changes.paused)
                s.paused = changes.paused
            if changes.display_name is not None:
                s.display_name = changes.display_name
            if changes.job is not None:
                s.job_template = template_of(changes.job)
            if changes.misfire_policy is not None:
                s.misfire_policy = changes.misfire_policy or MISFIRE_RUN_ONCE
            if changes.overlap_policy is not None:
                s.overlap_policy = changes.overlap_policy or OVERLAP_ALLOW
            if s.paused:
                s.next_run_time = None
            elif recount or s.next_run_time is None:
                s.next_run_time = next_tick(s.cron, s.time_zone, now)
            s.update_time = now
            await tx.update_schedule(s)
            return s

        updated = await self.store.write(body)
        self.wake()
        return updated

    async def delete_schedule(self, who: Principal, schedule_id: str) -> None:
        """DeleteSchedule: the schedule goes; the jobs it made stay."""
        deleted = await self.store.write(lambda tx: tx.delete_schedule(schedule_id, who.owner_filter))
        if not deleted:
            raise ScheduleNotFound(schedule_id)
        self.wake()

    async def trigger_schedule(self, who: Principal, schedule_id: str) -> tuple[JobPage, Schedule]:
        """TriggerSchedule: one job from the template now, paused or not, its ticks unmoved and its
        overlap policy not asked; the job and the schedule with it as its last job."""
        s = await self.get_schedule(who, schedule_id)
        request_id = trigger_request_id(s.id, ids.new_job_id())
        who_for = owner_of(s, self.key_named(s.owner))
        page = await self.jobs.create_job(who_for, job_of(s.job_template, request_id))
        now = self.clock()
        recorded = await self.store.write(lambda tx: tx.record_schedule_run(s.id, now, page.job.id, now))
        if recorded is None:  # deleted meanwhile: the job stays, as a deleted schedule's jobs do
            s.last_run_time, s.last_job_id = now, page.job.id
            recorded = s
        return page, recorded

    async def recent_jobs(self, schedule: Schedule, limit: int = RECENT_JOBS) -> list[Job]:
        """The last jobs ``schedule`` made (ticks and triggers), newest first."""
        async with self.store.read() as tx:
            return await tx.schedule_jobs(schedule.owner, schedule.job_prefix, limit)

    # --- the ticker -----------------------------------------------------------------------------------

    async def tick(self, now: int | None = None) -> int:
        """One pass of the ticker at ``now`` (default: the clock): serves every schedule due; returns how
        many jobs it made."""
        now = self.clock() if now is None else now
        made = 0
        for _ in range(DUE_READS):
            async with self.store.read() as tx:
                due = await tx.due_schedules(now, DUE_BATCH)
            # SERVE_AT_ONCE at a time (the ticks of 100 schedules due at one minute are served in a
            # few rounds, not one after another), in an order of this replica's own, so replicas
            # ticking together mostly serve different schedules first.
            random.shuffle(due)
            gate = asyncio.Semaphore(SERVE_AT_ONCE)
            results = await asyncio.gather(*(self._served(gate, s, now) for s in due), return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:  # the others were served; the pass fails as a sequential one would
                raise failed
            made += sum(r for r in results if isinstance(r, int))
            if len(due) < DUE_BATCH:
                break
        return made

    async def _served(self, gate: asyncio.Semaphore, s: Schedule, now: int) -> int:
        async with gate:
            return await self.serve(s, now)

    async def serve(self, s: Schedule, now: int) -> int:
        """Serves one schedule as read at ``now``: makes its tick's job (if its policies say so), then
        moves it on if no one else has; returns the jobs made (0 or 1)."""
        expected = s.next_run_time
        if expected is None:
            return 0
        try:
            p = plan(s, now, int(self.config.schedule_misfire_grace * 1e6))
        except ValueError:
            log.error("schedule %s: its cron expression %r names no time that comes; parked", s.id, s.cron)
            await self.store.write(lambda tx: tx.advance_schedule(s.id, expected, None, None, None, now))
            return 0
        if p is None:
            return 0
        tick = p.tick
        if p.missed:
            log.info("schedule %s: ticks missed since %s: %s", s.id, rfc3339(expected), p.reason)
        if tick is not None and s.overlap_policy == OVERLAP_SKIP and s.last_job_id:
            async with self.store.read() as tx:
                last = await tx.get_job(s.last_job_id, s.owner)
            if last is not None and not last.state.terminal:
                log.info(
                    "schedule %s: tick %s skipped: its last job %s has not ended (OVERLAP_POLICY_SKIP)",
                    s.id,
                    rfc3339(tick),
                    last.id,
                )
                tick = None
        job_id = await self._make(s, tick) if tick is not None else None
        ran = tick if job_id is not None else None
        moved = await self.store.write(
            lambda tx: tx.advance_schedule(s.id, expected, p.next_run_time, ran, job_id, now)
        )
        if not moved:
            log.debug("schedule %s: tick %s was moved on by another pass", s.id, rfc3339(expected))
            if job_id is not None and ran is not None:
                # The other pass may have skipped the tick (it saw the last job still running under
                # OVERLAP_POLICY_SKIP): the job this one made is still the schedule's newest.
                made_at = ran
                await self.store.write(lambda tx: tx.record_tick_job(s.id, made_at, job_id, now))
        return 1 if job_id is not None else 0

    async def _make(self, s: Schedule, tick: int) -> str | None:
        """The job of ``tick`` (the one an earlier pass made, if any); None when CreateJob refuses it."""
        request_id = tick_request_id(s.id, tick)
        try:
            who = owner_of(s, self.key_named(s.owner))
            page = await self.jobs.create_job(who, job_of(s.job_template, request_id))
        except DatabaseUnavailable:
            raise  # the pass fails and is tried again, the tick still due
        except DomainError as exc:
            if exc.reason == "JOB_ALREADY_EXISTS":
                log.info("schedule %s: tick %s skipped: %s", s.id, rfc3339(tick), exc.message)
            else:
                log.warning("schedule %s: tick %s made no job: %s", s.id, rfc3339(tick), exc.message)
            return None
        except Exception:
            log.exception("schedule %s: tick %s made no job", s.id, rfc3339(tick))
            return None
        return page.job.id

    async def next_run(self) -> int | None:
        """The earliest next run of any schedule (None: none)."""
        async with self.store.read() as tx:
            return await tx.next_schedule_run()

    async def run(self, stop: asyncio.Event) -> None:
        """Ticks until ``stop`` is set: a pass, then a sleep until the earliest next run (at most
        POLL_SECONDS), cut short by ``wake``."""
        passes = FailingPasses("schedule ticker", log)
        while not stop.is_set():
            self._wake.clear()
            delay = POLL_SECONDS
            try:
                await self.tick()
                earliest = await self.next_run()
                passes.worked()
                if earliest is not None:
                    # A millisecond over: a timer that fires a little early finds the tick due.
                    delay = min(POLL_SECONDS, max(0.0, (earliest - self.clock()) / 1e6 + 0.001))
            except Exception as exc:  # keep ticking if one pass fails (e.g. the database briefly away)
                passes.failed(exc)
                delay = RETRY_SECONDS
            if delay > 0:
                await _first(stop, self._wake, delay)


async def _first(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    """Waits until ``stop`` or ``wake`` is set, or ``timeout`` seconds have passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
