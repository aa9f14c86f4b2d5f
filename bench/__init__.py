"""jobpulse benchmarks: every figure is a ratio against a bare grpc.aio server measured in the same run.

Run with ``python -m bench.run_all`` (``--quick`` for a short smoke run). Servers under test run in
processes of their own (see ``bench.procs``); the load generator is the parent process.
"""

import sys as _sys
from pathlib import Path as _Path

# The helpers shared with the test suite (tests/support: server processes, polling) are imported
# as ``support``, as the tests import them.
_SUPPORT = str(_Path(__file__).resolve().parent.parent / "tests")
if _SUPPORT not in _sys.path:
    _sys.path.append(_SUPPORT)
