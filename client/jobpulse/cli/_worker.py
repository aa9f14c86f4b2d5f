"""The sample worker's commands: ``worker`` runs one until Ctrl-C or SIGTERM; ``demo`` creates a job,
has a few of them process it in threads, and watches it to the end.

The handler itself, which sleeps per item and fails on request, is ``jobpulse.cli._sample_worker``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import jobpulse.cli._connection as _connection
from jobpulse._convert import job_state_name
from jobpulse.cli import _render
from jobpulse.cli._errors import EXIT_INTERRUPTED, EXIT_USAGE, _document, exit_code_for, format_error
from jobpulse.cli._jobs import _all_chunks
from jobpulse.cli._output import _print_json, _report
from jobpulse.cli._sample_worker import sample_handler
from jobpulse.cli._watch import watch_with_display
from jobpulse.errors import JobpulseError
from jobpulse.v1 import job_pb2
from jobpulse.worker import Worker


def _log_to_stderr(level: int) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@contextlib.contextmanager
def _event_on_signal(signum: int, event: threading.Event) -> Iterator[None]:
    """Sets ``event`` when ``signum`` arrives, for as long as the block runs.

    The handler itself only writes a byte to a pipe; a thread reads it and sets the event. Setting a
    ``threading.Event`` in the handler would take the event's lock on the main thread, between any two
    bytecodes: a second signal arriving while the first handler (or the main thread's own
    ``event.wait``) holds that lock would deadlock the process (seen: ``kill`` twice in a row left the
    worker hung for ever).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    received = False

    def on_signal(signum: int, frame: object) -> None:
        # The first one asks to stop; later ones (a burst, or a second kill while we wind down) return
        # at once: a handler that does next to nothing cannot nest deeply in itself, and switching to
        # SIG_IGN here would make Python print "Signal 15 ignored due to race condition" for a signal
        # already on its way.
        nonlocal received
        if received:
            return
        received = True
        with contextlib.suppress(OSError):
            os.write(write_end, b"\0")

    def relay() -> None:
        while os.read(read_end, 64):
            event.set()

    relay_thread = threading.Thread(target=relay, name="jobpulse-signal-relay", daemon=True)
    relay_thread.start()
    previous = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        if not received:  # as it was before; once received, the handler stays (it only returns now)
            signal.signal(signum, previous)
        os.close(write_end)  # the relay reads end-of-file and returns
        relay_thread.join(timeout=5.0)
        os.close(read_end)


def _in_background_of_a_terminal() -> bool:
    """True for a job started with ``&`` in a terminal: its terminal's foreground is another process group
    (the shell, or a ``jobpulse watch`` drawing its live line there)."""
    try:
        return os.tcgetpgrp(sys.stderr.fileno()) != os.getpgrp()
    except OSError:  # not a terminal
        return False


def _cmd_worker(args: argparse.Namespace) -> int:
    if not args.kind:
        # Without kinds a worker claims every kind: the sample handler would complete other teams'
        # real jobs with fake work.
        line = (
            "error: jobpulse worker needs --kind KIND: its sample handler only pretends to work, and "
            "without a kind it would claim (and complete) every job on the server"
        )
        _report(args, None, line, _document(line.removeprefix("error: "), "USAGE"))
        return EXIT_USAGE
    # Started with `&` in a terminal, it keeps to warnings and errors: its per-chunk lines would be
    # drawn over whatever the foreground shows (a `jobpulse watch` bar).
    quiet = _in_background_of_a_terminal()
    _log_to_stderr(logging.WARNING if quiet else logging.INFO)
    with _connection._client(args) as client:
        worker = Worker(
            client,
            kinds=args.kind,
            concurrency=args.concurrency,
            lease_duration=args.lease,
            poll_wait=5.0,
        )
        kinds = ", ".join(args.kind)
        stop = threading.Event()
        # SIGTERM stops as gracefully as a first Ctrl-C: no new claims, chunks in hand are finished.
        with _event_on_signal(signal.SIGTERM, stop):
            if not quiet:
                print(
                    f"worker {worker.worker_id} on {args.target} ({kinds}, {args.concurrency} threads); "
                    "Ctrl-C to stop",
                    file=sys.stderr,
                    flush=True,
                )
            try:
                handled = worker.run(sample_handler(args.item_delay, args.fail_rate), stop_event=stop)
            except KeyboardInterrupt:
                # A second Ctrl-C: the chunks in hand are abandoned (their leases run out and other
                # workers take them). Their threads still run, on this client: exiting here, at once,
                # keeps them from reporting on a closed channel.
                print("interrupted: the chunks in hand are left to their leases", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(EXIT_INTERRUPTED)
    print(f"worker stopped after {handled} chunks", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _log_to_stderr(logging.ERROR)  # worker chatter would tear the progress line
    total = args.chunks * args.items_per_chunk
    stop = threading.Event()
    failures: list[BaseException] = []
    with _connection._client(args) as client:
        job = client.create_job(
            "demo",
            total,
            display_name=f"demo {args.chunks}x{args.items_per_chunk}",
            chunk_size=args.items_per_chunk,
            labels={"source": "jobpulse-demo"},
        )
        print(
            f"created job {job.id}: {total} items in {args.chunks} chunks; starting {args.workers} workers",
            file=sys.stderr,
        )
        handler = sample_handler(args.item_delay, args.fail_rate)

        def run_worker(n: int) -> None:
            worker = Worker(
                client,
                kinds=["demo"],
                worker_id=f"demo-worker-{n}-{os.getpid()}",
                lease_duration=10.0,
                poll_wait=1.0,
            )
            try:
                worker.run(handler, stop_event=stop)
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=run_worker, args=(n,), daemon=True) for n in range(1, args.workers + 1)
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            if args.json:
                final = client.wait(job.id)
            else:
                final = watch_with_display(client, job.id, json_lines=False, stream=sys.stdout)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=5.0)
        elapsed = time.monotonic() - started
        full = _all_chunks(client, client.get_job(job.id, view="full"))
    for failure in failures:
        if isinstance(failure, JobpulseError):
            print(format_error(failure, args.target), file=sys.stderr)
    if args.json:
        _print_json(full)
    else:
        _print_demo_summary(full, elapsed)
    return exit_code_for(final.state)


def _print_demo_summary(job: job_pb2.Job, elapsed: float) -> None:
    attempts = sum(c.attempt for c in job.chunks)
    per_worker = Counter(c.worker_id for c in job.chunks if c.state == job_pb2.CHUNK_STATE_COMPLETED)
    print(
        f"job {job.id} {job_state_name(job.state)} in {_render.format_seconds(elapsed)}: "
        f"{job.progress.items_done}/{job.progress.items_total} items, "
        f"{_render.summary_text(job.chunks_summary)}, {attempts} attempts, {len(job.artifacts)} artifacts"
    )
    if per_worker:
        print(_render.table(("WORKER", "CHUNKS"), sorted(per_worker.items())))
