"""Counting what a store is asked to do, for tests that hold a path to a number of transactions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest


def count_writes(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per write transaction ``store`` runs from now on (its ``write`` is wrapped)."""
    seen: list[int] = []
    write = store.write

    async def counted(body: Callable[[Any], Awaitable[Any]], **kw: Any) -> Any:
        seen.append(1)
        return await write(body, **kw)

    monkeypatch.setattr(store, "write", counted)
    return seen
