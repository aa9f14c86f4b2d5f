"""The ``kinds`` commands: list the kinds of work with their controls and chunks; pause, resume or cap one
(UpdateKind, an admin key)."""

from __future__ import annotations

import argparse

import jobpulse.cli._connection as _connection
from jobpulse.cli import _render
from jobpulse.cli._output import _print_json
from jobpulse.v1 import job_service_pb2


def _cmd_list(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        kinds = list(client.list_kinds())
    if args.json:
        _print_json({"kinds": [_render.to_dict(k) for k in kinds]})
        return 0
    if not kinds:
        print("no kinds: none has chunks pending or running, and none was paused or capped")
        return 0
    print(_render.kinds_table(kinds))
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        kind = client.update_kind(args.kind, paused=True)
    return _said(args, kind, "paused: none of its chunks is claimed until it is resumed; running ones finish")


def _cmd_resume(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        kind = client.update_kind(args.kind, paused=False)
    return _said(args, kind, "resumed: its chunks are claimed again")


def _cmd_cap(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        kind = client.update_kind(args.kind, max_running_chunks=args.max_running_chunks)
    n = kind.max_running_chunks
    return _said(args, kind, f"capped: at most {n} of its chunks run at once" if n else "uncapped")


def _said(args: argparse.Namespace, kind: job_service_pb2.Kind, what: str) -> int:
    if args.json:
        _print_json(kind)
    else:
        counts = f"{kind.pending_chunks} pending, {kind.running_chunks} running"
        print(f"kind {kind.kind} {what} ({counts})")
    return 0
