"""The thread-based worker: :class:`Worker` runs a handler over claimed chunks, each handed over as a
:class:`Task`. Generated from the asyncio one (``jobpulse._async.worker``, see ``jobpulse._sync``)."""

from __future__ import annotations

from jobpulse._sync.worker import Handler, Task, Worker

__all__ = ["Handler", "Task", "Worker"]
