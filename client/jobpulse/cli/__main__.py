"""``python -m jobpulse.cli``: the ``jobpulse`` command, as when ``cli`` was a single module run as a script.

Unlike the console script (``jobpulse.cli._entry``) it leaves ``GRPC_VERBOSITY`` as the environment has it.
"""

from __future__ import annotations

import sys

from jobpulse.cli import main

if __name__ == "__main__":
    sys.exit(main())
