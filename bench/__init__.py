"""jobpulse benchmarks: one runner, ``python -m bench [SCENARIO]`` (see ``bench.__main__`` and
bench/README.md). Every figure is a ratio to a baseline measured in the same run; servers under test
run in processes of their own (``bench.procs``), the load generator is the runner's process.
"""

import sys as _sys
from pathlib import Path as _Path

# The helpers shared with the test suite (tests/support: server processes, polling) are imported
# as ``support``, as the tests import them.
_SUPPORT = str(_Path(__file__).resolve().parent.parent / "tests")
if _SUPPORT not in _sys.path:
    _sys.path.append(_SUPPORT)
