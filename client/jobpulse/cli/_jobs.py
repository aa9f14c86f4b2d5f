"""The job commands: ``create``, ``get``, ``list``, ``cancel``, ``retry`` and ``delete``."""

from __future__ import annotations

import argparse

import jobpulse.cli._connection as _connection
from jobpulse import _render
from jobpulse._client import Client
from jobpulse._convert import job_state_name
from jobpulse.cli._argtypes import _filters
from jobpulse.cli._output import _print_json
from jobpulse.v1 import job_pb2


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
        )
    if args.json:
        _print_json(job)
    else:
        chunks = job.chunks_summary.total
        plural = "s" if chunks != 1 else ""
        print(f"created job {job.id} ({chunks} chunk{plural} of up to {job.chunk_size} items)")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = client.get_job(args.job_id, view="basic" if args.basic else "full")
        if not args.basic:
            job = _all_chunks(client, job)
    if args.json:
        _print_json(job)
        return 0
    print(_render.job_details(job))
    if job.chunks:
        print()
        print(_render.chunks_table(job.chunks))
    return 0


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


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = client.cancel_job(args.job_id, args.reason)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)}")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
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
