"""The ``watch`` command: follows a job to its end with a progress display, or as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

import jobpulse.cli._connection as _connection
from jobpulse._convert import job_state_name
from jobpulse._sync.client import Client
from jobpulse.cli import _render
from jobpulse.cli._errors import exit_code_for
from jobpulse.v1 import job_pb2


def watch_with_display(client: Client, job_id: str, *, json_lines: bool, stream: TextIO) -> job_pb2.Job:
    """Follows a job to its end, showing progress on ``stream``, and returns the final job.

    A lost connection is said, never silent: on a terminal in place of the progress line (attempt and
    error) until the stream is back; otherwise one line on stderr when lost and one when resumed, or with
    ``json_lines`` one JSON object each on stderr (``{"event": "reconnecting", ...}``, ``"resumed"``), so
    ``stream`` keeps the watch messages only.

    Args:
        client: The client to watch with.
        job_id: The job to follow.
        json_lines: Print each watch message as one JSON line instead of a progress display.
        stream: Where to write.
    """
    display = _render.ProgressDisplay(stream, live=stream.isatty() and not json_lines, target=client.target)
    notices = _render.JsonNotices(sys.stderr, client.target) if json_lines else display
    job = job_pb2.Job()
    try:
        for event in client.watch_job(job_id, on_reconnect=notices.reconnecting, on_resume=notices.resumed):
            if event.HasField("job"):
                job = event.job
            if json_lines:
                stream.write(json.dumps(_render.to_dict(event), separators=(",", ":")) + "\n")
                stream.flush()
            else:
                display.update(event, job)
    finally:
        display.finish()
    return job


def _cmd_watch(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = watch_with_display(client, args.job_id, json_lines=args.json, stream=sys.stdout)
    if not args.json:
        print(f"job {job.id} {job_state_name(job.state)}")
    return exit_code_for(job.state)
