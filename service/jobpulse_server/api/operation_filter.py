"""The ``filter`` of google.longrunning ListOperations: a small subset of AIP-160.

Grammar (whitespace between tokens is free; ``AND`` is upper case, as AIP-160 writes it)::

    filter := "" | term { "AND" term }
    term   := "done" "=" ( "true" | "false" )
            | "state" "=" STATE          (PENDING, PROCESSING, CANCELLING, COMPLETED, FAILED,
                                          CANCELLED, with or without the JOB_STATE_ prefix, quoted or not)
            | "kind" "=" VALUE           (a "double-quoted" string with \\" and \\\\ escapes, or a bare
                                          word of letters, digits, _ . -)
            | "type" "=" ( "job" | "bulk" )

Terms combine by AND: ``done = false AND kind = "thumbnails"``. ``type`` picks what is listed: the jobs
(``job``, the default) or the bulk operations (``bulk``: CancelJobs, RetryJobs, PurgeJobs), which have
no state or kind of their own, so with ``type = bulk`` only ``done`` may be given. Anything else (OR,
NOT, other fields or operators) is refused with INVALID_ARGUMENT naming ``filter``, never silently
ignored: a filter read wrongly would list operations the caller did not ask for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobpulse_server.domain.model import JobState
from jobpulse_server.wire.validation import MAX_ID, Checker

MAX_FILTER = 1024
_TERMINAL = frozenset(s for s in JobState if s.terminal)
_RUNNING = frozenset(s for s in JobState if not s.terminal)
_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op>=)|(?P<word>[A-Za-z0-9_.\-]+))')
_FIELDS = "done, state, kind, type"
TYPES = ("job", "bulk")


@dataclass
class OperationFilter:
    """What a ListOperations filter asks for: ``states`` None is any state; ``matches_nothing`` when
    its terms contradict each other (``done = true AND done = false``)."""

    states: frozenset[JobState] | None = None
    kind: str | None = None
    matches_nothing: bool = False
    # What is listed: "job" (the default) or "bulk".
    type: str = "job"
    # ``done`` as given (None: not given), what a listing of bulk operations filters on.
    done: bool | None = None
    # Whether a ``state`` or ``kind`` term was given (a job's fields), and a ``type`` term.
    job_terms: bool = False
    type_given: bool = False


def parse_filter(text: str, c: Checker, field: str = "filter") -> OperationFilter:
    """The filter ``text`` stands for; a violation of ``field`` on ``c`` when it does not parse."""
    out = OperationFilter()
    if len(text) > MAX_FILTER:
        c.fail(field, f"must be at most {MAX_FILTER} characters (got {len(text)})")
        return out
    try:
        tokens = _tokens(text)
        i = 0
        while i < len(tokens):
            if i:
                if tokens[i] != ("word", "AND"):
                    raise ValueError(f"expected AND before {tokens[i][1]!r} (only AND combines terms)")
                i += 1
            if len(tokens) < i + 3 or tokens[i][0] != "word" or tokens[i + 1][0] != "op":
                raise ValueError(f"expected <field> = <value> at {_rest(tokens, i)!r}")
            _apply(out, tokens[i][1], tokens[i + 2])
            i += 3
        if out.type == "bulk" and out.job_terms:
            raise ValueError("with type = bulk only done may be given (state and kind are a job's)")
    except ValueError as exc:
        c.fail(field, f"{exc}; the grammar: <field> = <value> [AND ...] with fields {_FIELDS}")
    return out


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    at = 0
    end = len(text.rstrip())
    while at < end:
        m = _TOKEN.match(text, at)
        if m is None:
            pos = at + len(text[at:]) - len(text[at:].lstrip())
            raise ValueError(f"unexpected {text[pos]!r} at position {pos}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        at = m.end()
    return tokens


def _rest(tokens: list[tuple[str, str]], i: int) -> str:
    return " ".join(value for _, value in tokens[i:]) or "the end"


def _unquote(token: tuple[str, str]) -> str:
    kind, value = token
    if kind == "string":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if kind == "word":
        return value
    raise ValueError(f"expected a value, got {value!r}")


def _apply(out: OperationFilter, name: str, value_token: tuple[str, str]) -> None:
    value = _unquote(value_token)
    states: frozenset[JobState]
    if name == "done":
        if value_token[0] != "word" or value not in ("true", "false"):
            raise ValueError(f"done must be true or false (got {value_token[1]})")
        states = _TERMINAL if value == "true" else _RUNNING
        out.done = value == "true"  # two that differ match nothing (by the states, below)
    elif name == "state":
        out.job_terms = True
        upper = value.upper().removeprefix("JOB_STATE_")
        if upper not in JobState.__members__:
            raise ValueError(f"state must be one of {', '.join(JobState.__members__)} (got {value_token[1]})")
        states = frozenset({JobState[upper]})
    elif name == "kind":
        out.job_terms = True
        if not value or len(value) > MAX_ID or "\x00" in value:
            raise ValueError(f"kind must be 1 to {MAX_ID} characters without NUL")
        if out.kind is not None and out.kind != value:
            out.matches_nothing = True
        out.kind = value
        return
    elif name == "type":
        if value_token[0] != "word" or value not in TYPES:
            raise ValueError(f"type must be job or bulk (got {value_token[1]})")
        if out.type_given and out.type != value:
            out.matches_nothing = True
        out.type, out.type_given = value, True
        return
    else:
        raise ValueError(f"unknown field {name!r}")
    out.states = states if out.states is None else out.states & states
    if not out.states:
        out.matches_nothing = True
