"""JobService use cases: create, read, list, cancel, retry, update, delete, stats.

Inputs arrive validated for shape (wire/validation.py); the rules that need the stored state live
here. Reads go through ``Store.read()``; every change is one ``Store.write(body)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from opentelemetry import trace

from jobpulse_server.domain import ids
from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.errors import (
    ChunkNotFound,
    ChunkNotRetryable,
    DependencyFailed,
    DomainError,
    FieldViolation,
    InvalidArgument,
    InvalidPageToken,
    JobAlreadyExists,
    JobAlreadyTerminal,
    JobNotFound,
    JobNotRetryable,
    JobNotTerminal,
    WebhookSecretMissing,
)
from jobpulse_server.domain.filters import ORDERS, JobFilter, job_sort_key
from jobpulse_server.domain.model import (
    AFTER_ALL,
    AFTER_PER_CHUNK,
    FULL_VIEW_CHUNK_LIMIT,
    HELD,
    Attempt,
    Chunk,
    ChunkState,
    Job,
    JobHead,
    JobState,
    split_items,
)
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.domain.reports import FailureGroup, StatsRow
from jobpulse_server.platform.config import Config
from jobpulse_server.services import job_trace, pagination, pipeline
from jobpulse_server.services.artifacts import load_artifacts
from jobpulse_server.services.latency import Ends, Latency
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.webhooks import check_url
from jobpulse_server.store import RequestIdTaken, Store, Tx, UniqueKeyTaken

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


@dataclass
class NewJob:
    """A validated CreateJob request."""

    kind: str
    total_items: int
    chunk_size: int
    max_attempts: int
    priority: int
    display_name: str = ""
    labels: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None
    request_id: str = ""
    webhook_url: str = ""
    webhook_progress: bool = False
    # Microseconds the finished job is kept; 0 for ever; None: the server's default (AIP-214).
    ttl: int | None = None
    # When the job may start (microseconds since the epoch); None: at once.
    schedule_time: int | None = None
    # At most this many chunks PROCESSING at once; 0: no limit.
    max_running_chunks: int = 0
    # The jobs this one waits for (distinct ids) and how (DependencyMode's number; 0: ALL).
    after: list[str] | None = None
    after_mode: int = 0
    # The finalize chunk's kind; empty: none.
    finalize_kind: str = ""
    # Fail fast after this many chunks FAILED for good; 0: no limit.
    max_failed_chunks: int = 0
    # The longest one attempt may run, and the job as a whole from its start or schedule_time (us); 0: no
    # limit.
    attempt_timeout: int = 0
    timeout: int = 0
    # At most one live job of the owner with this kind and key; empty: no key.
    unique_key: str = ""


def request_fingerprint(req: NewJob, who: Principal) -> str:
    """A digest of everything a CreateJob request asks for, after defaults (not its request_id)."""
    asked = {
        "kind": req.kind,
        "total_items": req.total_items,
        "chunk_size": req.chunk_size,
        "max_attempts": req.max_attempts,
        "priority": req.priority,
        "display_name": req.display_name,
        "labels": req.labels or {},
        "metadata": req.metadata or {},
        "webhook_url": req.webhook_url or who.webhook_url,
        "webhook_progress": req.webhook_progress,
    }
    if req.ttl is not None:
        # Only when set, so requests without a ttl keep the fingerprints stored before it existed.
        asked["ttl"] = req.ttl
    if req.schedule_time is not None:
        asked["schedule_time"] = req.schedule_time
    if req.max_running_chunks:
        asked["max_running_chunks"] = req.max_running_chunks
    if req.after:
        asked["after"] = req.after
        asked["after_mode"] = req.after_mode or AFTER_ALL
    if req.finalize_kind:
        asked["finalize_kind"] = req.finalize_kind
    for name in ("max_failed_chunks", "attempt_timeout", "timeout", "unique_key"):
        if getattr(req, name):
            asked[name] = getattr(req, name)
    text = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class JobPage:
    """A job with (some of) its chunks.

    ``delta_after`` set: ``chunks`` holds only the shown chunks changed after that revision (the
    caller holds the others, see ``Known``)."""

    job: Job
    chunks: list[Chunk] | None = None
    chunks_next_page_token: str = ""
    delta_after: int | None = None
    # False: the job's artifacts were not read, since the caller holds this revision's encoding.
    artifacts_read: bool = True


P = TypeVar("P")
Listed = TypeVar("Listed", Job, JobHead)


@dataclass
class JobListing(Generic[P]):
    """A page of ListJobs: its jobs, the tokens of the pages after and before it (empty: none), the
    listing's total and the WatchJobs change horizon at the time of reading."""

    pages: list[P]
    next_page_token: str
    previous_page_token: str
    total: int
    horizon: int


# The revision at which the caller already holds a job's shown chunks (FULL), or its whole BASIC
# encoding, if any (see encoded_jobs): at the job's own revision neither chunks nor artifacts are
# read, at an older one (FULL only) just the chunks changed since.
Known = Callable[[Job | JobHead], int | None] | None


# ListJobChunks' job id for every job the caller may see (AIP-159).
EVERY_JOB = "-"
# The most reasons SummarizeFailures answers with (the most recent).
FAILURE_GROUPS = 100
# The most chunks one "retry all failed chunks with this reason" retries (the dashboard's Failures page).
RETRY_FAILURES_LIMIT = 1000


def chunk_filters(
    job_id: str, states: list[ChunkState], kind: str = "", error_reasons: Sequence[str] = ()
) -> str:
    asked: dict[str, Any] = {"job": job_id, "states": sorted(int(s) for s in states)}
    if kind or error_reasons:  # only when given, so tokens made before these filters stay good
        asked.update(kind=kind, reasons=sorted(set(error_reasons)))
    return pagination.fingerprint(asked)


class JobService:
    """The caller-facing use cases."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        config: Config,
        clock: Clock = now_us,
        latency: Latency | None = None,
        *,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self.latency = latency  # the job-duration metric of jobs a cancel ends at once
        # With a real tracer, CreateJob keeps the trace context of the span it runs in with the job
        # (services/job_trace.py); with the no-op one (tracing off) ``_traced`` is false and it keeps none.
        self.tracer, self._traced = job_trace.tracing(tracer)

    async def _save(self, tx: Tx, job: Job, now: int) -> None:
        await self.outbox.save_job(tx, job, now)

    # --- create --------------------------------------------------------
    async def create_job(self, who: Principal, req: NewJob) -> JobPage:
        self.check_new_job(who, req)
        fingerprint = request_fingerprint(req, who) if req.request_id else ""
        if req.request_id:
            found = await self._earlier(who, req.request_id, fingerprint)
            if found is not None:
                return found
        return await self._create(who, req, fingerprint)

    def check_new_job(self, who: Principal, req: NewJob) -> None:
        """The checks of a CreateJob request that need the server's settings (the chunks it makes, the
        webhook URL); ScheduleService runs them on a template before any tick does."""
        n_chunks = -(-req.total_items // req.chunk_size) + (1 if req.finalize_kind else 0)
        if n_chunks > self.config.max_chunks_per_job:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "total_items",
                        f"makes {n_chunks} chunks of {req.chunk_size}; at most "
                        f"{self.config.max_chunks_per_job} chunks per job (raise chunk_size)",
                    )
                ]
            )
        if req.webhook_url:
            check_url(req.webhook_url, self.config)
        if (req.webhook_url or who.webhook_url) and who is ANONYMOUS and not self.config.webhook_secret:
            raise WebhookSecretMissing(
                "webhooks need a signing secret: set JOBPULSE_WEBHOOK_SECRET on the server, or use API keys"
            )

    async def _create(self, who: Principal, req: NewJob, fingerprint: str) -> JobPage:
        now = self.clock()
        # A time already passed starts the job at once, as if none was given.
        later = req.schedule_time if req.schedule_time is not None and req.schedule_time > now else None
        job = Job(
            id=ids.new_job_id(),
            owner=who.name,
            kind=req.kind,
            display_name=req.display_name,
            priority=req.priority,
            labels=dict(req.labels or {}),
            metadata=dict(req.metadata or {}),
            total_items=req.total_items,
            chunk_size=req.chunk_size,
            max_attempts=req.max_attempts,
            request_id=req.request_id or None,
            webhook_url=req.webhook_url or who.webhook_url,
            webhook_progress=req.webhook_progress,
            ttl=req.ttl,
            revision=1,
            create_time=now,
            update_time=now,
            trace_parent=job_trace.current_trace_parent() if self._traced else None,
            schedule_time=req.schedule_time,
            max_running_chunks=req.max_running_chunks,
            max_failed_chunks=req.max_failed_chunks,
            attempt_timeout=req.attempt_timeout,
            # From the time the job may start: its schedule_time, else now.
            deadline_time=(req.schedule_time if req.schedule_time is not None else now) + req.timeout
            if req.timeout
            else None,
            unique_key=req.unique_key,
        )
        new_chunks = [
            Chunk(
                id=ids.chunk_id(job.id, i),
                job_id=job.id,
                index=i,
                state=ChunkState.PENDING,
                item_start=start,
                item_count=count,
                max_attempts=req.max_attempts,
                revision=1,
                priority=req.priority,
                kind=req.kind,
                # Not claimed before the job's time: they wait as a retry waits out its backoff.
                next_attempt_time=later,
            )
            for i, (start, count) in enumerate(split_items(req.total_items, req.chunk_size))
        ]
        if req.finalize_kind:
            # The finalize chunk: no items, the last index, held until every other chunk has completed.
            new_chunks.append(
                Chunk(
                    id=ids.chunk_id(job.id, len(new_chunks)),
                    job_id=job.id,
                    index=len(new_chunks),
                    state=ChunkState.PENDING,
                    item_start=req.total_items,
                    item_count=0,
                    max_attempts=req.max_attempts,
                    revision=1,
                    priority=req.priority,
                    kind=req.finalize_kind,
                    next_attempt_time=HELD,
                    finalize=True,
                )
            )
            job.finalize_kind = req.finalize_kind
            job.pipeline = True
        job.after = list(req.after or [])
        job.after_mode = (req.after_mode or AFTER_ALL) if job.after else 0
        job.summary.pending = len(new_chunks)
        job.refresh_state(now)

        async def insert(tx: Tx) -> None:
            if job.after:
                await self._wait_for(tx, who, job, new_chunks)
            job.n_held = sum(1 for c in new_chunks if c.next_attempt_time == HELD)
            await tx.insert_job(job, new_chunks, fingerprint)
            if job.after:
                await tx.link_dependencies(job.id, job.after, job.after_mode)
            if any(c.next_attempt_time is None for c in new_chunks):
                tx.changes.new_work = True
            elif later is not None:  # waiting claimers are woken when its chunks come due
                tx.changes.work_later.append((later - now) / 1e6)

        try:
            await self.store.write(insert)
        except UniqueKeyTaken:
            # Lost to a live job with the key (made before, or by a create that committed first). A
            # retried create with the same request_id finds its own job above, before the key matters.
            await self._key_taken(who.name, req.kind, req.unique_key)
        except RequestIdTaken:
            # Lost a race with the same request_id: the first one wins (if it was the same request).
            found = await self._earlier(who, req.request_id, fingerprint)
            if found is None:
                raise
            return found
        await self.store.chunks_added(len(new_chunks))
        if self._traced:
            # The call's span names the job it made, so a trace search by job id finds its creation.
            trace.get_current_span().set_attribute("jobpulse.job_id", job.id)
        return JobPage(job, new_chunks[:FULL_VIEW_CHUNK_LIMIT], self._chunks_token(job))

    async def _wait_for(self, tx: Tx, who: Principal, job: Job, chunks: list[Chunk]) -> None:
        """Locks the jobs ``job`` waits for (so none ends between this look and the commit: the one that
        ends after it sees the new dependant) and holds the chunks they hold: every chunk until all have
        COMPLETED (ALL), or chunk i until the one's chunk i has (PER_CHUNK)."""
        found = await tx.lock_jobs(job.after)
        for i, after_id in enumerate(job.after):
            dep = found.get(after_id)
            if dep is None or (who.owner_filter is not None and dep.owner != who.owner_filter):
                raise InvalidArgument([FieldViolation(f"after[{i}]", f"job {after_id} was not found")])
            if dep.state in (JobState.FAILED, JobState.CANCELLED) or dep.cancel_requested:
                raise DependencyFailed(
                    f"job {after_id} has ended {dep.state.name}; a job after it could never run",
                    job_id=after_id,
                    state=dep.state.name,
                )
        regular = [c for c in chunks if not c.finalize]
        if job.after_mode == AFTER_PER_CHUNK:
            dep = found[job.after[0]]
            dep_chunks = dep.summary.total - (1 if dep.finalize_kind else 0)
            if dep_chunks != len(regular):
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "after_mode",
                            f"DEPENDENCY_MODE_PER_CHUNK needs as many chunks as job {dep.id} has "
                            f"({dep_chunks}); this job has {len(regular)}",
                        )
                    ]
                )
            done = await tx.completed_indexes(dep.id)
            for c in regular:
                if c.index not in done:
                    c.next_attempt_time = HELD
        elif any(found[a].state != JobState.COMPLETED for a in job.after):
            for c in regular:
                c.next_attempt_time = HELD

    async def _key_taken(self, owner: str, kind: str, unique_key: str) -> NoReturn:
        """JobAlreadyExists naming the live job that holds the key (if it has just ended, its id all the
        same: the caller may try again)."""
        async with self.store.read() as read:
            holder = await read.live_job_with_key(owner, kind, unique_key)
        raise _already_exists(holder, kind, unique_key)

    async def _run_again(self, body: Callable[[Tx], Awaitable[Job]]) -> JobPage:
        """Writes a RetryJob or RetryChunk; one that lost a race for its unique key to a create or another
        retry is JobAlreadyExists, as the check in the transaction says when there is no race."""
        try:
            return JobPage(await self.store.write(body))
        except UniqueKeyTaken as exc:
            raise JobAlreadyExists(
                f"another job holds unique_key {exc.args[0]!r}; this one can run again once it has ended",
                unique_key=str(exc.args[0]),
            ) from None

    async def _check_key_free(self, tx: Tx, job: Job) -> None:
        """Before an ended job runs again (RetryJob, RetryChunk): JobAlreadyExists while another job holds
        its unique key. (Two such moves racing meet the database's index: store.UniqueKeyTaken.)"""
        if job.unique_key and job.state.terminal:
            holder = await tx.live_job_with_key(job.owner, job.kind, job.unique_key)
            if holder is not None and holder != job.id:
                raise _already_exists(holder, job.kind, job.unique_key)

    async def _earlier(self, who: Principal, request_id: str, fingerprint: str) -> JobPage | None:
        """The job an earlier CreateJob made with this request_id, if any. The same request_id with a
        different request is refused (AIP-155): retrying is safe, reusing an id by mistake is loud."""
        async with self.store.read() as tx:
            earlier = await tx.find_job_by_request(who.name, request_id)
            stored = await tx.request_fingerprint(earlier.id) if earlier is not None else None
        if earlier is None:
            return None
        if stored is not None and stored != fingerprint:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "request_id",
                        f"{request_id!r} was already used for a different request (job {earlier.id}); "
                        "send the same request again to get that job, or use a new request_id",
                    )
                ]
            )
        return await self.get_job(who, earlier.id, full=True)

    def _chunks_token(self, job: Job) -> str:
        # A job's chunks are numbered 0..total-1 and never removed one by one: FULL shows the
        # first FULL_VIEW_CHUNK_LIMIT, and the rest continue after the last of them.
        if job.summary.total <= FULL_VIEW_CHUNK_LIMIT:
            return ""
        return pagination.encode("chunks", chunk_filters(job.id, []), [FULL_VIEW_CHUNK_LIMIT - 1])

    # --- read ----------------------------------------------------------
    async def get_job(self, who: Principal, job_id: str, *, full: bool, known: Known = None) -> JobPage:
        """The job, with its first chunks when ``full``. ``known(job)`` true means the caller already
        has the chunks of this revision: they are not read (``chunks`` is None)."""
        # BASIC is one statement, which needs no transaction around it.
        async with self.store.read(consistent=full) as tx:
            job = await tx.get_job(job_id, who.owner_filter)
            if job is None:
                raise JobNotFound(job_id)
            return (await self._pages(tx, [job], full, known))[0]

    async def _pages(self, tx: Tx, jobs: list[Job], full: bool, known: Known = None) -> list[JobPage]:
        """The jobs with their artifacts (one read for all of them) and, when ``full``, their first
        chunks; nothing is read for a job whose encoding the caller holds."""
        held = {job.id: known(job) if known is not None else None for job in jobs}
        await load_artifacts(tx, [job for job in jobs if held[job.id] != job.revision])
        pages = []
        for job in jobs:
            if held[job.id] == job.revision:
                if full:
                    pages.append(JobPage(job, [], self._chunks_token(job), job.revision, False))
                else:
                    pages.append(JobPage(job, artifacts_read=False))
            elif full:
                pages.append(await self._page(tx, job, held[job.id]))
            else:
                pages.append(JobPage(job))
        return pages

    async def _page(self, tx: Tx, job: Job, held: int | None) -> JobPage:
        """A FULL page of a job whose chunks the caller holds at revision ``held``, or None."""
        if held is not None:
            changed = await tx.list_chunks(job.id, after_revision=held)
            changed = [c for c in changed if c.index < FULL_VIEW_CHUNK_LIMIT]
            return JobPage(job, changed, self._chunks_token(job), delta_after=held)
        shown = await tx.list_chunks(job.id, limit=FULL_VIEW_CHUNK_LIMIT)
        return JobPage(job, shown, self._chunks_token(job))

    async def _load(self, tx: Tx, who: Principal, job_id: str, for_update: bool = False) -> Job:
        job = await tx.get_job(job_id, who.owner_filter, for_update=for_update)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def batch_get(
        self, who: Principal, job_ids: list[str], *, full: bool, known: Known = None
    ) -> list[JobPage]:
        async with self.store.read() as tx:
            found = await tx.get_jobs(job_ids, who.owner_filter)
            missing = [j for j in job_ids if j not in found]
            if missing:
                raise JobNotFound(missing[0])
            pages = {page.job.id: page for page in await self._pages(tx, list(found.values()), full, known)}
        return [pages[j] for j in job_ids]

    async def list_jobs(
        self,
        who: Principal,
        f: JobFilter,
        *,
        order_by: str,
        page_size: int,
        page_token: str,
        full: bool,
        known: Known = None,
        count: bool = True,
    ) -> tuple[list[JobPage], str, int, int]:
        """One page of jobs, the next page token, the total, and the WatchJobs change horizon.
        ``count`` False skips the COUNT behind the total (0 then): ExportJobs has no use for it."""
        found = await self.browse_jobs(
            who,
            f,
            order_by=order_by,
            page_size=page_size,
            page_token=page_token,
            full=full,
            known=known,
            count=count,
        )
        return found.pages, found.next_page_token, found.total, found.horizon

    async def list_kept_jobs(
        self,
        who: Principal,
        f: JobFilter,
        *,
        order_by: str,
        page_size: int,
        page_token: str,
        known: Known,
    ) -> tuple[list[JobPage | JobHead], str, int, int]:
        """``list_jobs`` BASIC for a caller that keeps jobs' encodings: the page is read as JobHeads
        first, and only the jobs whose revision ``known`` does not name are read whole (with their
        artifacts). A JobHead in the answer: the caller holds that job at that revision. (On SQLite
        the whole rows of a 20-job page and their mapping were 118 us of a ListJobs call's ~800 us of
        server CPU, for jobs the cache held anyway.)"""

        async def pages(tx: Tx, heads: list[JobHead]) -> list[JobPage | JobHead]:
            wanted = [h.id for h in heads if known is None or known(h) != h.revision]
            jobs = await tx.get_jobs(wanted, f.owner) if wanted else {}
            await load_artifacts(tx, list(jobs.values()))
            # The same snapshot read both: every wanted job is there, at the revision of its head.
            return [JobPage(jobs[h.id]) if h.id in jobs else h for h in heads]

        found = await self._browse(
            who, f, order_by, page_size, page_token, True, False, lambda tx: tx.list_job_heads, pages
        )
        return found.pages, found.next_page_token, found.total, found.horizon

    async def browse_jobs(
        self,
        who: Principal,
        f: JobFilter,
        *,
        order_by: str,
        page_size: int,
        page_token: str,
        full: bool = False,
        known: Known = None,
        count: bool = True,
        backward: bool = False,
    ) -> JobListing[JobPage]:
        """A page of jobs as ``list_jobs`` reads it, with a token for the page before it too (the
        dashboard's "previous"). ``backward``: ``page_token`` is a ``previous_page_token`` and the page
        is the one just before the page it came from."""

        async def pages(tx: Tx, jobs: list[Job]) -> list[JobPage]:
            return await self._pages(tx, jobs, full, known)

        return await self._browse(
            who, f, order_by, page_size, page_token, count, backward, lambda tx: tx.list_jobs, pages
        )

    async def _browse(
        self,
        who: Principal,
        f: JobFilter,
        order_by: str,
        page_size: int,
        page_token: str,
        count: bool,
        backward: bool,
        reader: Callable[[Tx], Callable[[JobFilter, str, list[Any] | None, int], Awaitable[list[Listed]]]],
        pages: Callable[[Tx, list[Listed]], Awaitable[list[P]]],
    ) -> JobListing[P]:
        """A page of jobs read by ``reader`` (whole jobs or their heads) and made into ``pages``, in one
        snapshot with the change horizon and the total."""
        f.owner = who.owner_filter
        filters = pagination.fingerprint(
            {
                "owner": f.owner,
                "states": sorted(int(s) for s in f.states),
                "kind": f.kind,
                "min": f.min_priority,
                "max": f.max_priority,
                "after": f.created_after,
                "before": f.created_before,
                "search": f.search,
                "labels": f.labels,
                "order": order_by,
            }
        )
        # A token holds the sort key of the last job shown (the first, for a previous-page token) and
        # the total counted for the first page: total_size is counted once per listing, not per page.
        after: list[Any] | None = None
        total: int | None = None
        if page_token:
            key = pagination.decode(page_token, "jobs", filters)
            _check_key(key, order_by)
            after, total = key[:-1], key[-1]
        elif backward:
            raise InvalidPageToken("a previous page needs the previous_page_token of a later page")
        # The page before a key is the page after it in the opposite order, read backwards.
        read_order = _reversed(order_by) if backward else order_by
        async with self.store.read() as tx:
            horizon = await tx.change_horizon()
            found: list[Listed] = await reader(tx)(f, read_order, after, page_size + 1)
            if total is None:
                total = await tx.count_jobs(f) if count else 0
            more = len(found) > page_size
            found = found[:page_size]
            if backward:
                found.reverse()
            made = await pages(tx, found)
        next_token = prev_token = ""
        if found:
            # A token only where there is a page to go to (made for each page: a ListJobs of the first
            # page made a previous-page token it threw away). Backward, we came from the page after.
            has_next = backward or more
            has_prev = more if backward else bool(page_token)
            if has_next:
                next_token = pagination.encode("jobs", filters, [*job_sort_key(found[-1], order_by), total])
            if has_prev:
                prev_token = pagination.encode("jobs", filters, [*job_sort_key(found[0], order_by), total])
        return JobListing(made, next_token, prev_token, total, horizon)

    async def list_chunks(
        self,
        who: Principal,
        job_id: str,
        states: list[ChunkState],
        page_size: int,
        page_token: str,
        kind: str = "",
        error_reasons: Sequence[str] = (),
    ) -> tuple[list[Chunk], str, int]:
        """ListJobChunks: a page of the job's chunks, the filters' token to the next and how many match;
        over EVERY_JOB, of every job the caller may see (``list_chunks_across``)."""
        filters = chunk_filters(job_id, states, kind, error_reasons)
        if job_id == EVERY_JOB:
            return await self._chunks_across(who, filters, states, kind, error_reasons, page_size, page_token)
        after = -1
        if page_token:
            key = pagination.decode(page_token, "chunks", filters)
            if len(key) != 1 or not isinstance(key[0], int):
                raise InvalidPageToken("page_token is malformed")
            after = key[0]
        async with self.store.read() as tx:
            job = await tx.get_job(job_id, who.owner_filter)
            if job is None:
                raise JobNotFound(job_id)
            found = await tx.list_chunks(
                job_id,
                after_index=after,
                limit=page_size + 1,
                states=states,
                kind=kind,
                error_reasons=error_reasons,
            )
            if kind or error_reasons:
                total = await tx.count_chunks(job_id, states, kind, error_reasons)
            else:
                # The job's counts are its chunks by state, read in the same snapshot: no COUNT(*) needed.
                s = job.summary
                total = sum(getattr(s, st.name.lower()) for st in set(states)) if states else s.total
        token = ""
        if len(found) > page_size:
            found = found[:page_size]
            token = pagination.encode("chunks", filters, [found[-1].index])
        return found, token, total

    async def _chunks_across(
        self,
        who: Principal,
        filters: str,
        states: list[ChunkState],
        kind: str,
        error_reasons: Sequence[str],
        page_size: int,
        page_token: str,
    ) -> tuple[list[Chunk], str, int]:
        """ListJobChunks over EVERY_JOB: newest job first, each job's chunks from its last; not counted."""
        after: tuple[str, int] | None = None
        if page_token:
            key = pagination.decode(page_token, "chunks-", filters)
            if len(key) != 2 or not isinstance(key[0], str) or not isinstance(key[1], int):
                raise InvalidPageToken("page_token is malformed")
            after = (key[0], key[1])
        async with self.store.read() as tx:
            found = await tx.list_chunks_across(
                who.owner_filter, states, kind, error_reasons, after, page_size + 1
            )
        token = ""
        if len(found) > page_size:
            found = found[:page_size]
            token = pagination.encode("chunks-", filters, [found[-1].job_id, found[-1].index])
        return found, token, 0

    async def summarize_failures(
        self, who: Principal, kind: str, created_after: int | None, created_before: int | None
    ) -> list[FailureGroup]:
        """SummarizeFailures: the chunks FAILED for good of the jobs the caller may see, by error reason."""
        async with self.store.read() as tx:
            return await tx.failure_groups(
                who.owner_filter, kind, created_after, created_before, FAILURE_GROUPS
            )

    async def retry_failures(
        self, who: Principal, reason: str, kind: str = "", limit: int = RETRY_FAILURES_LIMIT
    ) -> tuple[int, int, bool]:
        """ "Retry all failed chunks with this reason": RetryChunk on each chunk FAILED for good with
        ``reason`` (and of ``kind``) of the jobs the caller may see, newest job first, at most ``limit``
        of them, each in its own transaction (so a retry never waits on all the others). Chunks of a job
        cancelled or failed at once (RetryJob's to retry) and chunks retried meanwhile are skipped.
        Returns (retried, skipped, whether more are left)."""
        retried = skipped = 0
        after: tuple[str, int] | None = None
        while retried + skipped < limit:
            async with self.store.read() as tx:
                page = await tx.list_chunks_across(
                    who.owner_filter,
                    [ChunkState.FAILED],
                    kind,
                    [reason],
                    after,
                    min(200, limit - retried - skipped),
                )
            if not page:
                return retried, skipped, False
            for chunk in page:
                try:
                    await self.retry_chunk(who, chunk.job_id, chunk.id)
                    retried += 1
                except (JobNotRetryable, ChunkNotRetryable, JobNotFound, ChunkNotFound):
                    skipped += 1
            after = (page[-1].job_id, page[-1].index)
        async with self.store.read() as tx:
            more = await tx.list_chunks_across(
                who.owner_filter, [ChunkState.FAILED], kind, [reason], after, 1
            )
        return retried, skipped, bool(more)

    async def list_attempts(
        self, who: Principal, job_id: str, chunk_id: str, page_size: int, page_token: str
    ) -> tuple[list[Attempt], str]:
        """ListChunkAttempts: the attempts of the job's chunks (of ``chunk_id`` only, unless empty) by chunk
        index then attempt, a page at a time; ChunkNotFound for a chunk id not of this job."""
        index: int | None = None
        if chunk_id:
            head, sep, tail = chunk_id.rpartition("-")
            if head != job_id or not sep or not tail.isdigit():
                raise ChunkNotFound(chunk_id)
            index = int(tail)
        filters = pagination.fingerprint({"job": job_id, "chunk": chunk_id})
        after = (-1, 0)
        if page_token:
            key = pagination.decode(page_token, "attempts", filters)
            if len(key) != 2 or not all(isinstance(k, int) for k in key):
                raise InvalidPageToken("page_token is malformed")
            after = (key[0], key[1])
        async with self.store.read() as tx:
            job = await tx.get_job(job_id, who.owner_filter)
            if job is None:
                raise JobNotFound(job_id)
            if index is not None and index >= job.summary.total:
                raise ChunkNotFound(chunk_id)
            found = await tx.list_attempts(job_id, index, after, page_size + 1)
        token = ""
        if len(found) > page_size:
            found = found[:page_size]
            token = pagination.encode("attempts", filters, [found[-1].chunk_index, found[-1].attempt])
        return found, token

    async def chunk_at(self, who: Principal, job_id: str, index: int) -> tuple[Job, Chunk]:
        """The job and its chunk at ``index``, with its artifacts (the dashboard's chunk panel)."""
        async with self.store.read() as tx:
            job = await tx.get_job(job_id, who.owner_filter)
            if job is None:
                raise JobNotFound(job_id)
            found = await tx.list_chunks(job_id, after_index=index - 1, limit=1)
        if not found or found[0].index != index:
            raise ChunkNotFound(f"{job_id}/{index}")
        return job, found[0]

    async def chunk_states(self, who: Principal, job_id: str) -> tuple[Job, str]:
        """The job and every chunk's state in index order (one digit each), read together: the
        dashboard's chunk grid, which then follows the job's changes after ``job.revision``."""
        async with self.store.read(consistent=True) as tx:
            job = await tx.get_job(job_id, who.owner_filter)
            if job is None:
                raise JobNotFound(job_id)
            return job, await tx.chunk_states(job_id)

    async def dependants(self, who: Principal, job: Job) -> list[Job]:
        """The jobs waiting for ``job`` that ``who`` may see, in id order (the dashboard's chain)."""
        if not job.pipeline:
            return []
        async with self.store.read() as tx:
            ids = [job_id for job_id, _ in await tx.dependants(job.id)]
            found = await tx.get_jobs(ids, who.owner_filter) if ids else {}
        return [found[i] for i in ids if i in found]

    async def dependencies(self, who: Principal, job: Job) -> list[Job]:
        """The jobs ``job`` runs after that ``who`` may see, in its ``after`` order (the dashboard's
        chain)."""
        if not job.after:
            return []
        async with self.store.read() as tx:
            found = await tx.get_jobs(list(job.after), who.owner_filter)
        return [found[i] for i in job.after if i in found]

    # --- steer ---------------------------------------------------------
    async def cancel_job(self, who: Principal, job_id: str, reason: str) -> JobPage:
        ends = Ends()

        async def body(tx: Tx) -> Job:
            ends.clear()
            job = await self._load(tx, who, job_id, for_update=True)
            await self.cancel_locked(tx, job, reason, self.clock(), ends)
            await load_artifacts(tx, [job])
            return job

        job = await self.store.write(body)
        if self.latency is not None:
            self.latency.record(ends)
        return JobPage(job)

    async def cancel_locked(self, tx: Tx, job: Job, reason: str, now: int, ends: Ends) -> bool:
        """CancelJob's change to a job this transaction has locked: whether it changed it (False: it was
        cancelled already). JobAlreadyTerminal for a COMPLETED or FAILED job. CancelJobs too."""
        if job.state in (JobState.COMPLETED, JobState.FAILED):
            raise JobAlreadyTerminal(
                f"job {job.id} is already {job.state.name}; only running jobs can be cancelled",
                job_id=job.id,
                state=job.state.name,
            )
        return bool(await self.cancel_many(tx, [job], reason, now, ends))

    async def cancel_many(self, tx: Tx, jobs: Sequence[Job], reason: str, now: int, ends: Ends) -> list[Job]:
        """CancelJob's change to jobs this transaction has locked, in one write; those it changed (not
        the jobs that have ended, nor those cancelled already). CancelJobs' batches; CancelJob too."""
        acted = [
            j
            for j in jobs
            if not j.state.terminal and not j.cancel_requested and j.state != JobState.CANCELLED
        ]
        if not acted:
            return []
        tx.snapshot(acted)  # PostgreSQL saves only the columns a cancel changes
        revisions = {j.id: j.touch(now) for j in acted}
        moved = await tx.cancel_pending_chunks_many(revisions, now)
        for job in acted:
            job.cancel_requested = True
            job.cancel_reason = reason
            job.cancel_time = now
            job.summary.pending -= moved[job.id]
            job.summary.cancelled += moved[job.id]
            await tx.clear_held(job)
            job.refresh_state(now)
        ends.add(acted, [], now, None)
        if len(acted) > 1:  # a bulk batch's: the event loop serves calls between the two halves
            await asyncio.sleep(0)
        await self.outbox.save_jobs(tx, acted, now)
        return acted

    async def pause_job(self, who: Principal, job_id: str, *, paused: bool) -> JobPage:
        """PauseJob (``paused``) / ResumeJob: holds the job's chunks from claims, or lets them go again.
        The claims judge it with the job row they lock (``Job.claimable``), so a claim that commits after
        this one takes none of its chunks, on any replica."""

        async def body(tx: Tx) -> Job:
            job = await self._load(tx, who, job_id, for_update=True)
            if job.state.terminal:
                verb = "paused" if paused else "resumed"
                raise JobAlreadyTerminal(
                    f"job {job_id} is already {job.state.name}; only a job that has not ended can be {verb}",
                    job_id=job_id,
                    state=job.state.name,
                )
            if job.paused != paused:
                now = self.clock()
                job.touch(now)
                job.paused = paused
                tx.changes.new_work = not paused
                await tx.set_controls(job)
                await self._save(tx, job, now)
            await load_artifacts(tx, [job])
            return job

        return JobPage(await self.store.write(body))

    async def retry_job(self, who: Principal, job_id: str) -> JobPage:
        async def body(tx: Tx) -> Job:
            job = await self._load(tx, who, job_id, for_update=True)
            await self.retry_locked(tx, job, self.clock())
            await load_artifacts(tx, [job])
            return job

        return await self._run_again(body)

    async def retry_locked(self, tx: Tx, job: Job, now: int) -> None:
        """RetryJob's change to a job this transaction has locked; JobNotRetryable (or JobAlreadyExists)
        when it cannot run again now. RetryJobs too."""
        job_id = job.id
        if job.state not in _RETRYABLE:
            raise JobNotRetryable(
                f"job {job_id} is {job.state.name}; only FAILED or CANCELLED jobs can be retried",
                job_id=job_id,
                state=job.state.name,
            )
        if job.after and await tx.unfinished_dependencies(job.id):
            raise JobNotRetryable(
                f"job {job_id} waits for jobs that have not all COMPLETED ({', '.join(job.after)}); "
                "retry those first",
                job_id=job_id,
                state=job.state.name,
            )
        await self._check_key_free(tx, job)
        rev = job.touch(now)
        _run_again(job, await tx.reset_for_retry(job.id, rev, job.priority, job.max_attempts))
        await _restart_timeout(tx, job, now)
        job.refresh_state(now)
        await self.outbox.save_job(tx, job, now, await pipeline.rehold_finalize(tx, job, now))
        tx.changes.new_work = True

    async def retry_many(self, tx: Tx, jobs: Sequence[Job], now: int) -> list[Job]:
        """RetryJob's change to jobs this transaction has locked (RetryJobs' batches): those it changed;
        one that cannot run again now is passed over. A job that waits for others, holds a unique key,
        has a timeout or a finalize step goes alone (``retry_locked``); the rest in one write."""
        acted: list[Job] = []
        plain: list[Job] = []
        for job in jobs:
            if job.state not in _RETRYABLE:
                continue
            if not (job.after or job.unique_key or job.deadline_time is not None or job.finalize_kind):
                plain.append(job)
                continue
            try:
                await self.retry_locked(tx, job, now)
            except DomainError:  # raised before it wrote anything
                continue
            acted.append(job)
        if plain:
            moved = await tx.reset_for_retry_many(
                [(job.id, job.touch(now), job.priority, job.max_attempts) for job in plain]
            )
            for job in plain:
                _run_again(job, moved[job.id])
                job.refresh_state(now)
            if len(plain) > 1:  # as cancel_many: the event loop serves calls between the two halves
                await asyncio.sleep(0)
            await self.outbox.save_jobs(tx, plain, now)
            tx.changes.new_work = True
        return acted + plain

    async def retry_chunk(self, who: Principal, job_id: str, chunk_id: str) -> JobPage:
        """One FAILED chunk back to PENDING with max_attempts more claims; the job runs again."""

        async def body(tx: Tx) -> Job:
            job = await self._load(tx, who, job_id, for_update=True)
            # The job's lock holds its chunks still (workers lock the job before its chunks).
            chunk = await tx.get_chunk(job.id, chunk_id)
            if chunk is None:
                raise ChunkNotFound(chunk_id)
            if chunk.state != ChunkState.FAILED:
                raise ChunkNotRetryable(
                    f"chunk {chunk_id} is {chunk.state.name}; only a FAILED chunk can be retried",
                    job_id=job_id,
                    chunk_id=chunk_id,
                    state=chunk.state.name,
                )
            if job.cancel_requested:
                how = f"failed ({job.error_reason})" if job.failed_at_once else "was cancelled"
                raise JobNotRetryable(
                    f"job {job_id} {how}; RetryJob retries all of it",
                    job_id=job_id,
                    state=job.state.name,
                )
            now = self.clock()
            if job.state.terminal:  # it runs again: as RetryJob, with its timeout from now
                await self._check_key_free(tx, job)
                await _restart_timeout(tx, job, now)
            rev = job.touch(now)
            failed, _, items = await tx.reset_for_retry(job.id, rev, job.priority, job.max_attempts, chunk_id)
            job.summary.failed -= failed
            job.summary.pending += failed
            job.items_done -= items
            if not job.summary.failed:
                # No chunk has failed for good any more. While another has, the job keeps the error
                # of the first failure (it will end FAILED for that one).
                job.error_reason = job.error_message = ""
                job.error_chunk_index = None
            job.refresh_state(now)
            await self.outbox.save_job(tx, job, now, await pipeline.rehold_finalize(tx, job, now))
            tx.changes.new_work = True
            await load_artifacts(tx, [job])
            return job

        return await self._run_again(body)

    async def update_job(
        self,
        who: Principal,
        job_id: str,
        *,
        priority: int | None,
        labels: dict[str, str] | None,
        display_name: str | None,
        max_running_chunks: int | None = None,
    ) -> JobPage:
        async def body(tx: Tx) -> Job:
            job = await self._load(tx, who, job_id, for_update=True)
            now = self.clock()
            changed = False
            if priority is not None and priority != job.priority:
                job.priority = priority
                await tx.set_pending_priority(job.id, priority)
                changed = True
                tx.changes.new_work = True
            if labels is not None and labels != job.labels:
                job.labels = dict(labels)
                changed = True
            if display_name is not None and display_name != job.display_name:
                job.display_name = display_name
                changed = True
            if max_running_chunks is not None and max_running_chunks != job.max_running_chunks:
                job.max_running_chunks = max_running_chunks
                await tx.set_controls(job)
                changed = True
                tx.changes.new_work = True
            if changed:
                job.touch(now)
                await self._save(tx, job, now)
            await load_artifacts(tx, [job])
            return job

        return JobPage(await self.store.write(body))

    async def delete_job(self, who: Principal, job_id: str, force: bool) -> None:
        async def body(tx: Tx) -> None:
            job = await self._load(tx, who, job_id, for_update=True)
            await self.delete_locked(tx, job, force, self.clock())

        await self.store.write(body)

    async def delete_locked(self, tx: Tx, job: Job, force: bool, now: int) -> None:
        """DeleteJob on a job this transaction has locked; JobNotTerminal for one that has not ended,
        without ``force``. PurgeJobs too."""
        if not job.state.terminal and not force:
            raise JobNotTerminal(
                f"job {job.id} is {job.state.name}; cancel it first or pass force",
                job_id=job.id,
                state=job.state.name,
            )
        if _cancels_dependants(job):
            # Its dependants could never run: they are cancelled, and theirs in turn.
            jobs = {job.id: job}
            await pipeline.dependency_gone(tx, jobs, job, now)
            del jobs[job.id]
            for dependant in jobs.values():
                await self._save(tx, dependant, now)
        await tx.delete_job(job.id, now)

    async def delete_many(self, tx: Tx, jobs: Sequence[Job], force: bool, now: int) -> list[Job]:
        """DeleteJob on jobs this transaction has locked (PurgeJobs' batches): those it deleted; one that
        has not ended is passed over without ``force``. A pipeline's job that did not complete goes alone
        (``delete_locked``: its dependants change with it); the rest in one write."""
        acted = [job for job in jobs if job.state.terminal or force]
        together = []
        for job in acted:
            if _cancels_dependants(job):
                await self.delete_locked(tx, job, force, now)
            else:
                together.append(job.id)
        await tx.delete_jobs(together, now)
        return acted

    async def stats(self, who: Principal, f: JobFilter) -> tuple[StatsRow, list[StatsRow]]:
        f.owner = who.owner_filter
        async with self.store.read() as tx:
            return await tx.job_stats(f)


def _already_exists(holder: str | None, kind: str, unique_key: str) -> JobAlreadyExists:
    """The error of a create or retry refused for ``unique_key``, naming the job ``holder`` holding it."""
    return JobAlreadyExists(
        f"job {holder or '(just ended)'} of kind {kind!r} with unique_key {unique_key!r} has not ended; "
        "a second one is made once it has",
        **({"job_id": holder} if holder else {}),
        unique_key=unique_key,
    )


def _reversed(order_by: str) -> str:
    return order_by[: -len(" desc")] if order_by.endswith(" desc") else order_by + " desc"


def _check_key(key: list[Any], order_by: str) -> None:
    cols, _ = ORDERS[order_by]
    cols = (*cols, "total")
    types = {"id": str, "priority": int, "update_time": int, "total": int}
    if len(key) != len(cols) or not all(
        isinstance(v, types[c]) and not isinstance(v, bool) for v, c in zip(key, cols, strict=True)
    ):
        raise InvalidPageToken("page_token is malformed")


# The states RetryJob (and RetryJobs) runs a job again from.
_RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


def _cancels_dependants(job: Job) -> bool:
    """Whether deleting the job cancels jobs waiting for it (a pipeline's job that did not complete)."""
    return job.pipeline and job.state != JobState.COMPLETED


def _run_again(job: Job, moved: tuple[int, int, int]) -> None:
    """A retried job's own fields after its chunks went back to PENDING (``moved``: failed and cancelled
    chunks moved, their items done)."""
    failed, cancelled, items = moved
    job.summary.failed -= failed
    job.summary.cancelled -= cancelled
    job.summary.pending += failed + cancelled
    job.items_done -= items
    job.cancel_requested = False
    job.cancel_reason = ""
    job.cancel_time = None
    job.error_reason = job.error_message = ""
    job.error_chunk_index = None


async def _restart_timeout(tx: Tx, job: Job, now: int) -> None:
    """An ended job run again (RetryJob, RetryChunk): its timeout starts again from now, as long as it
    was from its start."""
    if job.deadline_time is not None:
        start = job.schedule_time if job.schedule_time is not None else job.create_time
        job.deadline_time = now + (job.deadline_time - start)
        await tx.set_deadline(job)
