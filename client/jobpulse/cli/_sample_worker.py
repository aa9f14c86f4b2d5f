"""The sample handler behind ``jobpulse worker`` and ``jobpulse demo``: pretends to process items."""

from __future__ import annotations

import random
import threading

from jobpulse.worker import Handler, Task


class SimulatedFailure(RuntimeError):
    """Raised by the sample handler to exercise retries (``--fail-rate``)."""


def sample_handler(item_delay: float, fail_rate: float = 0.0, *, seed: int | None = None) -> Handler:
    """Returns a handler that "processes" each item by sleeping ``item_delay`` seconds.

    It reports progress after every item, stops early when the job is cancelled, fails an attempt with
    probability ``fail_rate`` (part-way through), and records one artifact per chunk.

    Args:
        item_delay: Seconds per item.
        fail_rate: Probability (0..1) that a chunk attempt fails with :class:`SimulatedFailure`.
        seed: Seed for the failure draws, for reproducible runs.
    """
    rng = random.Random(seed)
    lock = threading.Lock()

    def handle(task: Task) -> None:
        with lock:
            fail_at = rng.randrange(len(task.items)) if task.items and rng.random() < fail_rate else -1
        for done, item in enumerate(task.items, start=1):
            if task.cancelled:
                return
            if done - 1 == fail_at:
                raise SimulatedFailure(f"simulated failure at item {item}")
            if item_delay > 0 and task.cancel_event.wait(item_delay):
                return
            task.progress(done, stage="processing")
        task.add_artifact(
            name=f"chunk-{task.chunk.index:05d}.txt",
            uri=f"s3://jobpulse-demo/{task.job_id}/{task.chunk.index}",
            media_type="text/plain",
            size_bytes=len(task.items),
        )

    return handle
