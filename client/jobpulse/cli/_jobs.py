"""The job commands: ``create``, ``get``, ``list``, ``cancel``, ``retry`` and ``delete``."""

from __future__ import annotations

import argparse
import itertools

import jobpulse.cli._bulk as _bulk
import jobpulse.cli._connection as _connection
from jobpulse._convert import chunk_state_name, job_state_name
from jobpulse._sync.client import Client
from jobpulse.cli import _render
from jobpulse.cli._argtypes import _filters
from jobpulse.cli._errors import EXIT_USAGE, _document
from jobpulse.cli._output import _print_json, _report
from jobpulse.v1 import job_pb2, job_service_pb2


def _all_chunks(client: Client, job: job_pb2.Job) -> job_pb2.Job:
    """Returns the job with every chunk inline, following chunks_next_page_token past the first 1000."""
    if job.chunks_next_page_token:
        job.chunks.extend(client.list_job_chunks(job.id, page_token=job.chunks_next_page_token))
        job.chunks_next_page_token = ""
    return job


def _cmd_create(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = client.create_job(
            args.kind,
            args.items,
            display_name=args.name,
            chunk_size=args.chunk_size,
            priority=args.priority,
            labels=dict(args.label),
            metadata=args.metadata,
            max_attempts=args.max_attempts,
            request_id=args.request_id,
            webhook_url=args.webhook_url or "",
            webhook_progress=args.webhook_progress,
            ttl=args.ttl,
            schedule_time=args.schedule_time,
            max_running_chunks=args.max_running_chunks,
            after=args.after,
            after_mode=args.after_mode,
            finalize_kind=args.finalize_kind,
            max_failed_chunks=args.max_failed_chunks,
            attempt_timeout=args.attempt_timeout or None,
            job_timeout=args.timeout or None,
            unique_key=args.unique_key,
        )
    if args.json:
        _print_json(job)
    else:
        chunks = job.chunks_summary.total
        plural = "s" if chunks != 1 else ""
        print(f"created job {job.id} ({chunks} chunk{plural} of up to {job.chunk_size} items)")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    states = args.chunk_state
    with _connection._client(args) as client:
        if args.json:  # a script's copy: every chunk (of the states asked for)
            job = client.get_job(args.job_id, view="basic" if args.basic or states else "full")
            if states and not args.basic:
                job.chunks.extend(client.list_job_chunks(job.id, states, page_size=1000))
            elif not args.basic:
                job = _all_chunks(client, job)
            _print_json(job)
            return 0
        job = client.get_job(args.job_id, view="basic")
        chunks: list[job_pb2.Chunk] = []
        if not args.basic:
            pages = client.list_job_chunks(job.id, states, page_size=min(args.chunks, 1000))
            chunks = list(itertools.islice(pages, args.chunks))
    print(_render.job_details(job))
    if args.basic:
        return 0
    matching = _chunks_in(job.chunks_summary, states)
    print()
    if not chunks:
        print("no chunks" if not states else "no chunks in " + _state_names(states))
        return 0
    print(_render.chunks_table(chunks))
    if matching > len(chunks):
        which = f" {_state_names(states)}" if states else ""
        print(
            f"({len(chunks)} of {matching}{which} chunks shown, {matching - len(chunks)} left out: "
            "--chunks N shows more, --chunk-state STATE picks a state)"
        )
    return 0


def _cmd_attempts(args: argparse.Namespace) -> int:
    """Every attempt of a job's chunks (or of one chunk: its id, or its index), by chunk then attempt."""
    chunk = args.chunk
    if chunk.isdigit():
        chunk = f"{args.job_id}-{chunk}"
    with _connection._client(args) as client:
        attempts = list(client.list_chunk_attempts(args.job_id, chunk, page_size=1000))
    if args.json:
        _print_json(job_service_pb2.ListChunkAttemptsResponse(attempts=attempts))
        return 0
    if not attempts:
        print(
            "no attempts yet: no chunk of it has been claimed"
            if not chunk
            else "no attempts of that chunk yet"
        )
        return 0
    print(_render.attempts_table(attempts))
    shown = [a for a in attempts if a.error.details] if args.details else []
    for a in shown:
        print(f"\nchunk {a.chunk_index}, attempt {a.attempt} ({a.error.reason}):")
        print(a.error.details.rstrip())
    if not args.details and any(a.error.details for a in attempts):
        print("(--details prints the tracebacks and other details the workers sent)")
    return 0


_SUMMARY_FIELD = {
    job_pb2.CHUNK_STATE_PENDING: "pending",
    job_pb2.CHUNK_STATE_PROCESSING: "processing",
    job_pb2.CHUNK_STATE_COMPLETED: "completed",
    job_pb2.CHUNK_STATE_FAILED: "failed",
    job_pb2.CHUNK_STATE_CANCELLED: "cancelled",
}


def _chunks_in(summary: job_pb2.ChunksSummary, states: list[job_pb2.ChunkState.ValueType]) -> int:
    """How many of the job's chunks are in one of ``states`` (all of them for none), by its summary."""
    if not states:
        return summary.total
    return sum(int(getattr(summary, _SUMMARY_FIELD[s])) for s in set(states) if s in _SUMMARY_FIELD)


def _state_names(states: list[job_pb2.ChunkState.ValueType]) -> str:
    return "/".join(chunk_state_name(s) for s in dict.fromkeys(states))


def _cmd_list(args: argparse.Namespace) -> int:
    jobs: list[job_pb2.Job] = []
    total = 0
    token = args.page_token
    cursor = ""
    with _connection._client(args) as client:
        while len(jobs) < args.limit:
            # Pages never overshoot the limit, so the last page's token continues exactly after it.
            page = client.list_jobs_page(
                page_size=min(100, args.limit - len(jobs)),
                page_token=token,
                order_by=args.order_by,
                **_filters(args),
            )
            total = page.total_size
            cursor = cursor or page.watch_cursor
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
    if args.json:
        _print_json(
            {
                "jobs": [_render.to_dict(j) for j in jobs],
                "totalSize": str(total),
                "nextPageToken": token,
                "watchCursor": cursor,
            }
        )
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(_render.jobs_table(jobs))
    if token:
        print(f"({len(jobs)} of {total}; the next ones: --page-token {token})")
    return 0


def _one_or_all(args: argparse.Namespace, action: str) -> int | None:
    """For cancel and retry: None to act on the one job ID; else the exit of the bulk operation (--all),
    or of the usage error of giving both or neither."""
    if args.all and args.job_id:
        line = "give a job ID or --all with filters, not both"
        _report(args, None, line, _document(line, "USAGE"))
        return EXIT_USAGE
    if args.all:
        return _bulk.run_bulk(args, action)
    if not args.job_id:
        line = "give a job ID, or --all with filters"
        _report(args, None, line, _document(line, "USAGE"))
        return EXIT_USAGE
    return None


def _cmd_cancel(args: argparse.Namespace) -> int:
    bulk = _one_or_all(args, "cancel")
    if bulk is not None:
        return bulk
    with _connection._client(args) as client:
        job = client.cancel_job(args.job_id, args.reason)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)}")
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = client.pause_job(args.job_id)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)}, paused: no chunk of it is claimed until resumed")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = client.resume_job(args.job_id)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)}, resumed")
    return 0


def _cmd_update(args: argparse.Namespace) -> int:
    changes = {
        "priority": args.priority,
        "display_name": args.name,
        "labels": dict(args.label) if args.label is not None else None,
        "max_running_chunks": args.max_running_chunks,
    }
    if all(v is None for v in changes.values()):
        said = "nothing to change: give --priority, --name, --label or --max-running-chunks"
        _report(args, None, f"jobpulse update: error: {said}", _document(said, "USAGE"))
        return EXIT_USAGE
    with _connection._client(args) as client:
        job = client.update_job(args.job_id, **changes)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} updated")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    bulk = _one_or_all(args, "retry")
    if bulk is not None:
        return bulk
    with _connection._client(args) as client:
        job = client.retry_chunk(args.job_id, args.chunk) if args.chunk else client.retry_job(args.job_id)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)} ({_render.summary_text(job.chunks_summary)})")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        client.delete_job(args.job_id, force=args.force)
    if args.json:
        _print_json({"deleted": args.job_id})
    else:
        print(f"deleted job {args.job_id}")
    return 0
