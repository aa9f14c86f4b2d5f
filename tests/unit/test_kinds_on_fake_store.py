"""The kinds service on the in-memory fake store: who may change a kind, what a change stores and
announces, and ListKinds' paging; and the rule a claim applies, ``Kind.claimable``."""

from __future__ import annotations

import pytest
from support.fake_store import FakeStore, new_job

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.errors import InvalidArgument, InvalidPageToken, PermissionDenied
from jobpulse_server.domain.model import Kind
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.services import pagination
from jobpulse_server.services.kinds import KindService

ALICE = Principal("alice", sees_all=False, role="client")


def _rig() -> tuple[FakeStore, KindService, list[Changes]]:
    published: list[Changes] = []
    store = FakeStore(on_commit=published.append)
    return store, KindService(store, clock=lambda: 1_000), published


async def test_only_an_admin_changes_a_kind_and_a_change_wakes_the_claims() -> None:
    _, kinds, published = _rig()
    with pytest.raises(PermissionDenied):
        await kinds.update_kind(ALICE, "resize", paused=True)
    assert published == [] and await kinds.list_kinds(ANONYMOUS, 10, "") == ([], "")

    paused = await kinds.update_kind(ANONYMOUS, "resize", paused=True)

    assert (paused.kind, paused.paused, paused.max_running_chunks, paused.update_time) == (
        "resize",
        True,
        0,
        1_000,
    )
    assert [c.new_work for c in published] == [True]
    capped = await kinds.update_kind(ANONYMOUS, "resize", max_running_chunks=3)
    assert (capped.paused, capped.max_running_chunks) == (True, 3)


@pytest.mark.parametrize("value", [-1, 1_000_001])
async def test_a_cap_out_of_range_is_refused_by_the_service_too(value: int) -> None:
    _, kinds, published = _rig()
    with pytest.raises(InvalidArgument) as info:
        await kinds.update_kind(ANONYMOUS, "resize", max_running_chunks=value)
    assert [v.field for v in info.value.violations] == ["kind.max_running_chunks"]
    assert published == []


async def test_listing_pages_through_kinds_with_rows_and_kinds_with_live_chunks() -> None:
    store, kinds, _ = _rig()
    for name in ("b", "d"):
        job, chunks = new_job(f"job-{name}", kind=name, total_items=10, chunk_size=5)
        store.add_job(job, chunks)
    job, chunks = new_job("job-alice", kind="b", total_items=5, chunk_size=5, owner="alice")
    store.add_job(job, chunks)
    for name in ("a", "c", "e"):
        await kinds.update_kind(ANONYMOUS, name, paused=True)

    first, token = await kinds.list_kinds(ANONYMOUS, 2, "")
    second, token2 = await kinds.list_kinds(ANONYMOUS, 2, token)
    third, end = await kinds.list_kinds(ANONYMOUS, 2, token2)

    assert [[k.kind for k in page] for page in (first, second, third)] == [["a", "b"], ["c", "d"], ["e"]]
    assert end == "" and (first[1].pending_chunks, second[1].pending_chunks) == (3, 2)
    # A key that sees only its own jobs counts only their chunks.
    mine, _ = await kinds.list_kinds(ALICE, 10, "")
    assert [(k.kind, k.pending_chunks) for k in mine] == [("a", 0), ("b", 1), ("c", 0), ("e", 0)]
    for forged in ("junk", pagination.encode("kinds", pagination.fingerprint({}), ["a\x00"])):
        with pytest.raises(InvalidPageToken):
            await kinds.list_kinds(ANONYMOUS, 2, forged)


def test_the_claim_rule_of_a_kinds_controls() -> None:
    assert Kind("k").claimable(running=50) is None
    assert Kind("k", paused=True, max_running_chunks=10).claimable(running=0) == 0
    assert Kind("k", max_running_chunks=3).claimable(running=1) == 2
    assert Kind("k", max_running_chunks=3).claimable(running=5) == 0
