"""The one benchmark runner: ``python -m bench [SCENARIO [ARGS...]]``.

    python -m bench                  # the default set (make bench)
    python -m bench list             # the scenarios
    python -m bench pg --quick       # one scenario, its own options after its name (--help lists them)

Each scenario starts the servers it measures in processes of their own and prints every figure beside
a baseline measured in the same run; the ones with targets write them to bench/figures.json and
bench/README.md's table. Run one alone on the machine: a test suite or another benchmark beside it
makes both sides lie.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, what it measures). Each module has main(argv) -> exit status.
SCENARIOS: dict[str, tuple[str, str]] = {
    "core": (
        "bench.core",
        "GetJob, ListJobs, the SQLite worker rows beside their floor under gRPC, watch of 1,000 jobs",
    ),
    "pg": ("bench.pg_peer", "claim + complete on PostgreSQL beside PgQueuer; more workers on one job"),
    "watch": ("bench.watch_streams", "WatchJob delivery latency and memory per stream, 100 / 1,000 / 5,000"),
    "http": ("bench.http_streams", "SSE beside WatchJob; memory per idle SSE stream; HTTP side on/off"),
    "json": ("bench.json_face", "GetJob and ListJobs as JSON beside gRPC; gRPC with the JSON routes on/off"),
    "scale": ("bench.listing_scale", "ListJobs first vs deep pages at 1,000,000 jobs; --plans writes plans"),
    "soak": ("bench.soak", "RSS under a steady mixed load, 10 minutes per database"),
    "export": ("bench.export_memory", "server and CLI peak RSS exporting 200,000 jobs beside 2,000"),
    "retention": ("bench.retention", "GetJob p99 while the expiry sweep deletes 200,000 jobs"),
    "scheduled": ("bench.scheduled", "how soon after its schedule_time a waiting claimer gets a job"),
    "pipeline": ("bench.pipeline", "a 3-stage PER_CHUNK pipeline and its finalize chunk beside one stage"),
    "failures": ("bench.failures", "SummarizeFailures over 1,000,000 failed chunks on PostgreSQL"),
    "operator": (
        "bench.operator",
        "bulk cancel of 100,000 jobs (and killed half-way), unique jobs on 2 replicas",
    ),
    "schedules": (
        "bench.schedules",
        "100 schedules every minute for 5 minutes on 2 replicas: one job a tick",
    ),
    "fairness": ("bench.fairness", "fair share: a small job behind a big one, two busy owners' shares"),
    "compare": ("bench.compare", "the worker rows of two revisions, round by round in one run"),
    "figures": ("bench.figures", "renders bench/figures.json into bench/README.md's table"),
}
DEFAULT = ("core",)


def run(name: str, argv: list[str]) -> int:
    module, _ = SCENARIOS[name]
    return int(importlib.import_module(module).main(argv) or 0)


def main(argv: list[str]) -> int:
    if not argv:
        for name in DEFAULT:
            status = run(name, [])
            if status:
                return status
        return 0
    name, rest = argv[0], argv[1:]
    if name in ("list", "-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\n")
        for key, (_, what) in SCENARIOS.items():
            print(f"  {key:<10} {what}{'  (default)' if key in DEFAULT else ''}")
        return 0
    if name not in SCENARIOS:
        print(f"python -m bench: no scenario {name!r}; one of {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
