"""Two revisions of the server side by side in one run: the worker throughput rows, alternating.

    python -m bench compare --base REV [--head REV] [--database postgresql] [--rounds 6] [--modes ...]
        [--base-setting NAME=VALUE ...] [--head-setting NAME=VALUE ...]

The 2-core machines this is measured on drift by a factor of two from hour to hour, so only two
revisions measured round by round in one run say anything about a change. Three servers run at once:
``--base`` (A), ``--head`` (B; default this working tree, changes included), each checked out with
``git worktree add --detach`` into a temporary directory and served with its own code first on
PYTHONPATH, each on a database of its own; and the bare grpc.aio server. Each round measures the bare
calls/s at ``--workers`` in flight, then each mode on A and B (order flipped every round, a fresh job
each time, as bench.core's rows). Printed: medians over the rounds, chunks/s against bare, B / A, and
server CPU per chunk. Run it alone on the machine.

A setting of one side (``--base-setting fair_share=off``) compares one revision with itself under two
settings: ``--base HEAD`` with a clean working tree.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from support.servers import ServerProcess

from bench import procs, report, scenarios, work
from bench.bare import BareServer, padded_get_job_response

ROOT = Path(__file__).resolve().parent.parent
BARE_KEY = "compare-bare"
# The bare call's response: about the size of a ChunkClaim answer.
BARE_RESPONSE_BYTES = 300


class GitError(Exception):
    """A git command failed; the message says which and what git said."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout.strip()


@contextmanager
def checkout(rev: str | None, tmp: Path, tag: str) -> Iterator[tuple[Path, str]]:
    """(source tree, its name): this working tree for None, else ``rev`` in a temporary worktree."""
    if rev is None:
        yield ROOT, f"working tree ({_git('rev-parse', '--short', 'HEAD')} + changes)"
        return
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except GitError:
        raise GitError(f"{rev!r} is not a commit of this repository ({ROOT})") from None
    tree = tmp / tag
    _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield tree, f"{rev} ({commit[:8]})"
    finally:
        _git("worktree", "remove", "--force", str(tree))


def pythonpath(tree: Path) -> str:
    """The revision's own packages first: the server and the generated client it imports."""
    return f"{tree / 'service'}:{tree / 'client'}"


Rows = dict[tuple[str, str], list[dict[str, Any]]]  # (side, mode) -> the row of each round


async def measure(args: argparse.Namespace, a: ServerProcess, b: ServerProcess, bare: BareServer) -> Any:
    bare.set_response(BARE_KEY, padded_get_job_response(BARE_RESPONSE_BYTES, BARE_KEY))
    bare_rates: list[float] = []
    rows: Rows = {(s, m): [] for s in "AB" for m in args.modes}
    async with scenarios.Target.open(bare) as target:
        for r in range(args.rounds):
            rate = await scenarios.bare_rate(target, BARE_KEY, args.workers, args.seconds)
            bare_rates.append(rate["per_second"])
            order = (("A", a), ("B", b)) if r % 2 == 0 else (("B", b), ("A", a))
            line = [f"round {r + 1}/{args.rounds}: bare {rate['per_second']:,.0f} calls/s"]
            for mode in args.modes:
                for side, server in order:
                    size = {"workers": args.workers, "backlog": args.backlog, "seconds": args.seconds}
                    row = await scenarios.chunk_throughput(server, mode=work.MODES[mode], **size)
                    if row.get("unimplemented"):
                        raise SystemExit(f"{side} does not implement {mode}")
                    rows[(side, mode)].append(row)
                    rate, cpu = row["chunks_per_second"], _us(row["server_cpu_us_per_chunk"])
                    line.append(f"{mode} {side} {rate:,.0f}/s {cpu}")
            print("; ".join(line), flush=True)
    return bare_rates, rows


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} us"


def render(names: dict[str, str], bare_rates: list[float], rows: Rows, args: argparse.Namespace) -> str:
    bare = statistics.median(bare_rates)
    out = [f"A: {names['A']}", f"B: {names['B']}"]
    sizes = f"{args.database}, {args.workers} workers, {args.rounds} rounds of {args.seconds:g} s per row"
    out.append(f"{sizes}; medians; bare grpc.aio {bare:,.0f} calls/s at {args.workers} in flight")
    cells, spread = [], []
    for mode in args.modes:
        a, b = ([r["chunks_per_second"] for r in rows[(side, mode)]] for side in "AB")
        cpu = [[x for r in rows[(side, mode)] if (x := r["server_cpu_us_per_chunk"])] for side in "AB"]
        ma, mb = statistics.median(a), statistics.median(b)
        ratios = [f"{ma:,.0f}", f"{mb:,.0f}", f"{mb / ma:.3f}", f"{ma / bare:.3f}", f"{mb / bare:.3f}"]
        cells.append([mode, *ratios, *(_us(statistics.median(c) if c else None) for c in cpu)])
        spread.append(f"{mode} " + " ".join(f"{y / x:.2f}" for x, y in zip(a, b, strict=True)))
    head = ["mode", "A chunks/s", "B chunks/s", "B / A", "A / bare", "B / bare", "A CPU/chunk", "B CPU/chunk"]
    out += report.table(head, cells, indent="")
    out.append("B / A round by round (how far apart the rounds are is the noise): " + "; ".join(spread))
    return "\n".join(out)


@asynccontextmanager
async def served(
    args: argparse.Namespace, prefix: str
) -> AsyncIterator[tuple[dict[str, str], ServerProcess, ServerProcess, BareServer]]:
    """Revisions ``args.base`` (A) and ``args.head`` (B) served on ``args.database``, each on a database of
    its own, and the bare server, all ready: (the revisions' names by side, A, B, bare). Stopped, their
    worktrees and databases removed, when the block ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = Path(tmp_name)
        with (
            checkout(args.base, tmp, "a") as (tree_a, name_a),
            checkout(args.head, tmp, "b") as (tree_b, name_b),
        ):
            name_a += "".join(f", {k}={v}" for k, v in args.base_setting.items())
            name_b += "".join(f", {k}={v}" for k, v in args.head_setting.items())
            async with AsyncExitStack() as stack:
                url_a = await stack.enter_async_context(procs.database(args.database, "compare_a"))
                url_b = await stack.enter_async_context(procs.database(args.database, "compare_b"))
                a = stack.enter_context(
                    procs.Jobpulse(url_a, pythonpath=pythonpath(tree_a), **args.base_setting)
                )
                b = stack.enter_context(
                    procs.Jobpulse(url_b, pythonpath=pythonpath(tree_b), **args.head_setting)
                )
                yield {"A": name_a, "B": name_b}, a, b, stack.enter_context(BareServer())


async def run(args: argparse.Namespace) -> str:
    async with served(args, "jobpulse-compare-") as (names, a, b, bare):
        bare_rates, rows = await measure(args, a, b, bare)
    return render(names, bare_rates, rows, args)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    p = report.parser("compare", __doc__)
    p.add_argument("--base", required=True, help="revision A (any git revision: a commit, a branch, HEAD~2)")
    p.add_argument("--head", default=None, help="revision B (default: this working tree, as it is)")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    modes = ", ".join(work.MODES)
    p.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["complete_and_claim", "one_by_one"],
        help=f"comma-separated, of: {modes} (default complete_and_claim,one_by_one)",
    )
    for side in ("base", "head"):
        p.add_argument(
            f"--{side}-setting",
            type=_setting,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"a server setting of the {side} side (a Config field, e.g. fair_share=off); repeatable",
        )
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0, help="per row and round (default 5)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--backlog", type=int, default=50_000, help="chunks of each row's fresh job")
    args = p.parse_args(argv)
    args.base_setting, args.head_setting = dict(args.base_setting), dict(args.head_setting)
    if unknown := [m for m in args.modes if m not in work.MODES]:
        p.error(f"unknown mode {', '.join(unknown)}; one of {modes}")
    if args.rounds < 1 or args.seconds <= 0 or args.workers < 1:
        p.error("--rounds and --workers must be at least 1, --seconds more than 0")
    try:
        print(asyncio.run(run(args)), flush=True)
    except GitError as exc:  # a revision git does not know
        print(f"bench.compare: {exc}", file=sys.stderr)
        return 2
    return 0
