"""Changes across replicas on PostgreSQL: the store NOTIFYs on commit, every replica LISTENs here.

Each write transaction sends, inside the transaction (so it is delivered only if
it commits), which jobs changed to which revision and whether work appeared.
Every replica listens and wakes its own watchers and waiting claims; a watcher
then reads the delta from the database itself, so a notification carries no
state that could be lost. If the listening connection drops, notifications
sent meanwhile are gone: on reconnecting, the replica wakes every local
watcher and claim once (a catch-up read), so nothing is missed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import make_url

from jobpulse_server.domain.changes import CHANNEL, decode, own_prefixes
from jobpulse_server.events.hub import ChangeHub

log = logging.getLogger(__name__)


class Listener:
    """LISTENs on a dedicated asyncpg connection and feeds the local change hub."""

    def __init__(self, database_url: str, hub: ChangeHub, replica: str, retry_seconds: float = 1.0) -> None:
        url = make_url(database_url)
        self._connect_args = {
            "host": url.host or "localhost",
            "port": url.port or 5432,
            "user": url.username,
            "password": url.password,
            "database": url.database,
            "server_settings": {"application_name": "jobpulse-listener"},
        }
        self.hub = hub
        self.replica = replica
        self._own = own_prefixes(replica)
        self.retry_seconds = retry_seconds
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(self._own):
            return  # our own commits were published locally already (a NOTIFY per flush: not decoded)
        try:
            sender, changes = decode(payload)
        except (ValueError, TypeError, AttributeError):
            log.warning("ignoring a malformed change notification")
            return
        if sender != self.replica:  # our own commits were published locally already
            self.hub.publish(changes)

    async def run(self, stop: asyncio.Event) -> None:
        """Listens until ``stop`` is set, reconnecting (and catching up) after any loss."""
        import asyncpg

        first = True
        failed, said = 0, 0.0  # connects failed in a row; when that was last logged
        while not stop.is_set():
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(**self._connect_args, timeout=10)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                # Once when it starts, then once a minute: not a line a second for the whole outage.
                failed += 1
                now = asyncio.get_running_loop().time()
                if failed == 1 or now - said >= 60.0:
                    said = now
                    log.warning(
                        "change listener cannot connect (%s); retrying (%d tries so far)", exc, failed
                    )
                await _sleep_or_stop(stop, self.retry_seconds)
                continue
            failed = 0
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if not first:
                    self.reconnects += 1
                    log.info("change listener reconnected; waking every watcher for a catch-up read")
                    self.hub.wake_all()
                first = False
                self.connected.set()
                await _first_of(stop.wait(), lost.wait(), _watch_connection(conn, lost))
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("change listener lost its connection (%s)", exc)
            finally:
                self.connected.clear()
                if not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), timeout=2)
                    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                        conn.terminate()
            if not stop.is_set():
                await _sleep_or_stop(stop, self.retry_seconds)


async def _watch_connection(conn: Any, lost: asyncio.Event, every: float = 5.0) -> None:
    """Pings the connection so a silently dead one is noticed."""
    while not lost.is_set():
        await asyncio.sleep(every)
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=every)
        except Exception:
            lost.set()


async def _first_of(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
