"""The ``jobpulse`` console script: quiets gRPC's own log before gRPC is imported, then runs the CLI.

gRPC reads ``GRPC_VERBOSITY`` once, when it is imported, and at its default it prints internal lines
such as ``ssl_transport_security.cc:... Handshake failed`` on stderr, next to the CLI's own one-line
error that already says what went wrong and what to do. The command shows gRPC's errors only; set
``GRPC_VERBOSITY`` (e.g. ``INFO`` or ``DEBUG``) to see more. The SDK as a library leaves gRPC's log
as the application set it.
"""

from __future__ import annotations

import gc
import os
import sys


def main() -> int:
    """Runs ``jobpulse`` with ``sys.argv`` and returns its exit status."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from jobpulse.cli import main as cli_main

    code = cli_main()
    # A stream call that failed (a watch that reconnected) can be left in a reference cycle. Collected
    # at interpreter exit, its __del__ takes a lock that gRPC's daemon threads, frozen by then, may
    # hold: `jobpulse watch` printed the job's end and hung for ever (about 1 run in 10 of
    # tests/sdk/test_watch_reconnect_notice.py). Collected here, while those threads still run, it
    # cannot.
    gc.collect()
    return code


if __name__ == "__main__":
    sys.exit(main())
