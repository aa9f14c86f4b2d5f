"""Memory of an export: ExportJobs and ``jobpulse export`` at 200,000 jobs beside 2,000, on SQLite
(JOBPULSE_BENCH_EXPORT_JOBS and _BASELINE change the sizes).

Per size, baseline first: a fresh migrated SQLite file bulk-loaded with ``bench.listing_scale``'s
synthetic jobs, a jobpulse server (open mode: every owner's jobs) and ``jobpulse export --format csv``
in a second process, whose output this process reads and counts (the CLI sees what /dev/null would).
Reported: the server's peak RSS (VmHWM) before and after the export, the CLI's own VmHWM, rows and time.
Flat memory means the ratios to the baseline stay near 1 (a server keeping every job, or a CLI building
the document in memory, would grow by hundreds of MB).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from bench import procs, report
from bench.listing_scale import Backend, load_sqlite

JOBS = report.env_size("JOBPULSE_BENCH_EXPORT_JOBS", 200_000)
BASELINE = report.env_size("JOBPULSE_BENCH_EXPORT_BASELINE", 2000)


@dataclass
class Run:
    jobs: int
    seed_s: float = 0.0
    server_start_kib: int = 0  # VmHWM once serving, before the export
    server_peak_kib: int = 0  # VmHWM after the export
    cli_peak_kib: int = 0
    rows: int = 0
    export_s: float = 0.0


# Runs the CLI and, on its way out, reports its own peak resident set (VmHWM) on stderr. Not the
# rusage of the child seen by wait4: that counts the bench process's pages the child shared between
# fork and exec (the bench seeds the database in-process, so that inflated the figure about twofold).
_CLI = """
import sys
from jobpulse import cli
try:
    code = cli.main(sys.argv[1:])
finally:
    with open("/proc/self/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    sys.stderr.write(f"bench-vmhwm-kib {hwm}\\n")
sys.exit(code)
"""


def _export(target: str) -> tuple[int, int, float]:
    """Runs ``jobpulse export`` of every job; returns (CSV rows, CLI peak RSS in KiB, seconds)."""
    started = time.perf_counter()
    command = [sys.executable, "-c", _CLI, "--target", target, "export", "--format", "csv"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    lines = 0
    while block := proc.stdout.read(1 << 20):
        lines += block.count(b"\n")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"jobpulse export exited with {proc.returncode}: {err}")
    peak = [int(line.split()[1]) for line in err.splitlines() if line.startswith("bench-vmhwm-kib ")]
    if not peak:
        raise RuntimeError(f"the CLI did not report its peak RSS: {err}")
    return lines - 1, peak[-1], elapsed  # the header line is not a job


def measure(n_jobs: int) -> Run:
    run = Run(n_jobs)
    with tempfile.TemporaryDirectory(prefix="jobpulse-export-") as tmp:
        backend = Backend("sqlite", f"sqlite:///{tmp}/jobs.db", n_jobs)
        t0 = time.perf_counter()
        asyncio.run(procs.migrate(backend.url))
        load_sqlite(backend, time.time_ns() // 1000)
        run.seed_s = time.perf_counter() - t0
        with procs.Jobpulse(backend.url) as server:
            run.server_start_kib = procs.status_kib(server.pid, "VmHWM")
            run.rows, run.cli_peak_kib, run.export_s = _export(server.address)
            run.server_peak_kib = procs.status_kib(server.pid, "VmHWM")
    if run.rows != n_jobs:
        raise RuntimeError(f"exported {run.rows} rows of {n_jobs} jobs")
    return run


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


def render(base: Run, big: Run) -> str:
    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}" if a else "n/a"

    rows = [["", f"baseline, {base.jobs:,} jobs", f"{big.jobs:,} jobs", "ratio"], ["---"] * 4]
    for name, kib in (
        ("server peak RSS before the export", lambda r: r.server_start_kib),
        ("server peak RSS after the export", lambda r: r.server_peak_kib),
        ("server growth during the export", lambda r: r.server_peak_kib - r.server_start_kib),
        ("CLI peak RSS (jobpulse export --format csv)", lambda r: r.cli_peak_kib),
    ):
        growth = name.startswith("server growth")
        rows.append([name, _mib(kib(base)), _mib(kib(big)), "" if growth else ratio(kib(base), kib(big))])
    rows.append(["rows exported", f"{base.rows:,}", f"{big.rows:,}"])
    rate = [f"{r.export_s:.2f} s, {r.rows / r.export_s:,.0f}/s" for r in (base, big)]
    rows.append(["export time, jobs/s", *rate])
    rows.append(["seeding (migrate + bulk insert)", f"{base.seed_s:.1f} s", f"{big.seed_s:.1f} s"])
    title = f"ExportJobs memory on SQLite: {big.jobs:,} jobs beside a baseline of {base.jobs:,} (same run)"
    table = ["| " + " | ".join(row + [""] * (4 - len(row))) + " |" for row in rows]
    return "\n".join([title, "", *table, "", "Flat memory: the peak ratios stay near 1."])


def main(argv: list[str] | None = None) -> int:
    report.parser("export", __doc__).parse_args(argv)  # no options, sizes are variables: --help says so
    if not sys.platform.startswith("linux"):
        print("python -m bench export reads /proc: Linux only", file=sys.stderr)
        return 1
    started = time.perf_counter()
    print(f"machine: {report.machine_facts()}; load before: {report.load_average()}", flush=True)
    base = measure(BASELINE)
    print(f"baseline done: {base}", flush=True)
    big = measure(JOBS)
    print(render(base, big))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load after: {report.load_average()}")
    return 0
