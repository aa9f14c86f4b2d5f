"""The benchmark harness lives at the repository's root (bench/) and is imported as the package ``bench``,
whichever way pytest was started."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
