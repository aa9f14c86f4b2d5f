"""How a command prints: results as JSON on stdout, errors as one line or one JSON object on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any

from jobpulse.cli import _render


def _print_json(value: Any) -> None:
    print(_render.to_json(value))


def _print_error(as_json: bool, line: str, document: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps(document, separators=(",", ":")), file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def _report(args: argparse.Namespace, exc: BaseException | None, line: str, document: dict[str, Any]) -> None:
    """Prints an error the command anticipated: one line, or with ``--json`` one JSON object (on stderr
    both, so stdout keeps only results); with ``--debug`` the traceback first."""
    if getattr(args, "debug", False) and exc is not None:
        traceback.print_exception(exc)
    _print_error(bool(getattr(args, "json", False)), line, document)
