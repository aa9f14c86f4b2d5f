"""jobpulse benchmarks: every figure is a ratio against a bare grpc.aio server measured in the same run.

Run with ``python -m bench.run_all`` (``--quick`` for a short smoke run). Servers under test run in
processes of their own (see ``bench.procs``); the load generator is the parent process.
"""
