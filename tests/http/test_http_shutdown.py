"""SIGTERM with 200 open SSE streams: every stream ends cleanly (the response's last chunk, then the
connection closes) and the server exits 0 within its drain time."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from support.servers import ServerProcess, free_port

import jobpulse

STREAMS = 200
DRAIN = 3.0


def test_sigterm_with_200_open_streams_exits_0_within_the_drain(database_url: str, tmp_path: Path) -> None:
    http_port = free_port()
    proc = ServerProcess(database_url, tmp_path, http_port=http_port, drain_seconds=DRAIN).start()
    try:
        with jobpulse.Client(proc.address, timeout=20) as client:
            job = client.create_job(kind="drain", total_items=4, chunk_size=1)
        request = f"GET /v1/jobs/{job.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        socks = []
        for _ in range(STREAMS):
            sock = socket.create_connection(("127.0.0.1", http_port), timeout=20)
            sock.sendall(request)
            socks.append(sock)
        received = {}
        for sock in socks:  # each stream is open: headers and the snapshot have arrived
            data = b""
            while b"event: snapshot" not in data:
                chunk = sock.recv(65536)
                assert chunk, "a stream closed before its snapshot"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            received[sock] = data
        started = time.monotonic()
        code = proc.terminate(timeout=DRAIN + 15)
        took = time.monotonic() - started
        assert code == 0, proc.log()
        assert took < DRAIN + 5, f"exit took {took:.1f}s with a {DRAIN}s drain"
        for sock in socks:
            sock.settimeout(10)
            data = received[sock]
            while chunk := sock.recv(65536):
                data += chunk
            # The chunked body was ended properly (0-length chunk), not cut mid-response.
            assert data.endswith(b"0\r\n\r\n"), data[-200:]
            sock.close()
        assert "Traceback" not in proc.log()
    finally:
        proc.close()
