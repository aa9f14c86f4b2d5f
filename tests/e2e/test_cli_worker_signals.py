"""``jobpulse worker`` stops on SIGTERM, however many arrive and whenever they do: a graceful stop (the
chunks in hand finished, "worker stopped" said), never a hang and never a traceback. It hung once: its
handler set a threading.Event, and a second SIGTERM landing while the first handler held the event's
lock deadlocked the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

JOBPULSE = str(Path(sys.executable).with_name("jobpulse"))


def test_a_burst_of_sigterms_stops_the_worker_gracefully(server: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env["JOBPULSE_TARGET"] = server.address
    for _round in range(2):
        worker = subprocess.Popen(
            [JOBPULSE, "worker", "--kind", "nothing-to-claim"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert worker.stderr is not None
        started = worker.stderr.readline()  # the handler is in place once the banner is printed
        assert "Ctrl-C to stop" in started, started
        deadline = time.monotonic() + 2.0
        while worker.poll() is None and time.monotonic() < deadline:
            worker.send_signal(signal.SIGTERM)
        try:
            rest = worker.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            worker.kill()
            raise AssertionError("the worker hung after a burst of SIGTERMs") from None
        # The stop itself was graceful: said, with nothing printed beside it. A SIGTERM of the burst that
        # lands after it, while Python tears down (its handlers back to the default), ends the process
        # with the signal's own status: the usual meaning of a second kill, with the work already done.
        assert "worker stopped after 0 chunks" in rest and "Traceback" not in rest, rest
        assert worker.returncode in (0, -signal.SIGTERM), rest
