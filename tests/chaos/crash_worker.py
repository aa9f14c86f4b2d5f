"""A worker process for the crash test: claims one chunk at a time, works a little, completes.

It appends ``C <chunk_id>`` to its log before working and ``D <chunk_id> <token>``
after the server acknowledged the completion, so the test can tell which
completions were acknowledged and what a killed worker was holding. A completion
that fails for a reason other than a lost lease (a deadline on a busy machine, the
server briefly unavailable) has an unknown outcome: it is logged ``E <chunk_id>``
and the worker goes on, where it used to die with ``C`` as its last line.
"""

from __future__ import annotations

import os
import random
import sys
import time

import jobpulse
from jobpulse.errors import JobpulseError, LeaseLost, Unavailable


def main(target: str, worker_id: str, log_path: str) -> None:
    client = jobpulse.Client(target, timeout=10)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    log(f"S {worker_id}")
    while True:
        try:
            claims = client.claim_chunks(
                worker_id, kinds=["crash"], max_chunks=1, lease_duration=1.0, wait=1.0
            )
        except Unavailable:
            continue
        for claim in claims:
            log(f"C {claim.chunk.id}")
            time.sleep(random.uniform(0.005, 0.03))  # the "work": a kill -9 may land here
            try:
                client.complete_chunk(claim.chunk.id, claim.lease_token)
            except LeaseLost:
                log(f"L {claim.chunk.id}")
                continue
            except JobpulseError:
                log(f"E {claim.chunk.id}")
                continue
            log(f"D {claim.chunk.id} {claim.lease_token}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
