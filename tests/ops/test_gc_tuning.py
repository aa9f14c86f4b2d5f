"""The server's collector settings: frozen start-up objects and a higher young-generation threshold."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobpulse_server.platform import gc_tuning


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)


def test_tune_freezes_what_exists_and_raises_the_threshold(restore_gc: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune(12_345)
    assert gc.get_threshold() == (12_345, 10, 10)
    assert gc.get_freeze_count() > 0, "objects alive at start-up must be frozen (never scanned again)"


def test_zero_leaves_the_collector_alone(restore_gc: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_the_server_applies_its_configured_threshold(
    make_server: Callable[..., Any], restore_gc: None
) -> None:
    make_server(gc_threshold=43_210)
    assert gc.get_threshold()[0] == 43_210
