"""End-to-end: the Kind resource on both databases: ListKinds (the kinds with controls or live chunks, their
counts, paging) and UpdateKind (paused, max_running_chunks; admin only; its checks), through the RPCs,
the SDK and the CLI. Whether a claim obeys a kind's controls is the claim's to test; here they are stored
and read back."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_service_pb2


def _kinds(client: jobpulse.Client) -> dict[str, tuple[bool, int, int, int]]:
    """Each listed kind's (paused, max_running_chunks, pending_chunks, running_chunks)."""
    return {
        k.kind: (k.paused, k.max_running_chunks, k.pending_chunks, k.running_chunks)
        for k in client.list_kinds()
    }


def test_kinds_list_their_live_chunks_and_their_controls(client: jobpulse.Client) -> None:
    resize = client.create_job("resize", 5, chunk_size=1)
    client.create_job("resize", 2, chunk_size=1)
    encode = client.create_job("encode", 3, chunk_size=1)
    client.claim_chunks("w1", kinds=["resize"], max_chunks=2)

    assert _kinds(client) == {"encode": (False, 0, 3, 0), "resize": (False, 0, 5, 2)}

    # A kind with no chunks yet may be paused ahead of time, and is listed from then on.
    ahead = client.update_kind("transcode", paused=True)
    assert (ahead.name, ahead.kind, ahead.paused, ahead.pending_chunks) == (
        "kinds/transcode",
        "transcode",
        True,
        0,
    )
    # Each update changes the fields it names and keeps the others.
    capped = client.update_kind("resize", max_running_chunks=4)
    assert (capped.paused, capped.max_running_chunks, capped.pending_chunks, capped.running_chunks) == (
        False,
        4,
        5,
        2,
    )
    paused = client.update_kind("kinds/resize", paused=True)
    assert (paused.paused, paused.max_running_chunks) == (True, 4)
    assert _kinds(client) == {
        "encode": (False, 0, 3, 0),
        "resize": (True, 4, 5, 2),
        "transcode": (True, 0, 0, 0),
    }

    # A kind whose chunks have all ended and that has no control leaves the list; one back at the
    # defaults stays (it was updated).
    for claim in client.claim_chunks("w1", kinds=["encode"], max_chunks=3):
        client.complete_chunk(claim.chunk.id, claim.lease_token)
    client.cancel_job(resize.id)
    client.update_kind("transcode", paused=False)
    assert _kinds(client) == {"resize": (True, 4, 2, 2), "transcode": (False, 0, 0, 0)}
    assert client.get_job(encode.id).chunks_summary.completed == 3


def test_list_kinds_pages_in_kind_order(client: jobpulse.Client, job_stub: Any) -> None:
    names = [f"kind-{i:02d}" for i in range(7)]
    for name in names[::2]:
        client.create_job(name, 1)
    for name in names[1::2]:
        client.update_kind(name, max_running_chunks=1)

    assert [k.kind for k in client.list_kinds(page_size=3)] == names
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = job_stub.ListKinds(job_service_pb2.ListKindsRequest(page_size=3, page_token=token))
        seen += [k.kind for k in page.kinds]
        sizes.append(len(page.kinds))
        token = page.next_page_token
        if not token:
            break
    assert (seen, sizes) == (names, [3, 3, 1])

    for bad in ("not-a-token", token + "x", "eyJ2IjoxLCJ0Ijoiam9icyIsImYiOiIiLCJrIjpbXX0"):
        with pytest.raises(grpc.RpcError) as info:
            job_stub.ListKinds(job_service_pb2.ListKindsRequest(page_token=bad))
        error = errors.from_rpc_error(info.value)
        assert isinstance(error, errors.InvalidArgument) and error.reason == "INVALID_PAGE_TOKEN", bad
    with pytest.raises(errors.InvalidArgument) as negative:
        list(client.list_kinds(page_size=-1))
    assert [f for f, _ in negative.value.field_violations] == ["page_size"]


def _update(mask: list[str] | None = None, **kind: Any) -> job_service_pb2.UpdateKindRequest:
    request = job_service_pb2.UpdateKindRequest(kind=job_service_pb2.Kind(**kind) if kind else None)
    if mask is not None:
        request.update_mask.CopyFrom(FieldMask(paths=mask))
    return request


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_update(), "kind.name update_mask"),
        (_update(name="resize", paused=True), "kind.name"),
        (_update(name="kinds/", paused=True), "kind.name"),
        (_update(name="kinds/" + "x" * 129, paused=True), "kind.name"),
        (_update(kind="a\x00b", paused=True), "kind.kind"),
        (_update(name="kinds/a", kind="b", paused=True), "kind.kind"),
        (_update(kind="a"), "update_mask"),
        (_update(["priority"], kind="a", paused=True), "update_mask"),
        (_update(["max_running_chunks"], kind="a", max_running_chunks=-1), "kind.max_running_chunks"),
        (_update(kind="a", max_running_chunks=1_000_001), "kind.max_running_chunks"),
    ],
)
def test_update_kind_names_the_field_it_cannot_take(
    job_stub: Any, client: jobpulse.Client, request_: job_service_pb2.UpdateKindRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        job_stub.UpdateKind(request_)
    error = errors.from_rpc_error(info.value)
    assert isinstance(error, errors.InvalidArgument), error
    assert [f for f, _ in error.field_violations] == field.split()
    assert _kinds(client) == {}, "nothing was stored"


def test_update_kind_without_a_mask_sets_what_is_set(job_stub: Any, client: jobpulse.Client) -> None:
    kind = job_stub.UpdateKind(_update(kind="implicit", paused=True, max_running_chunks=7)).kind
    assert (kind.name, kind.paused, kind.max_running_chunks) == ("kinds/implicit", True, 7)
    # Setting a control back to its default needs the mask: the field alone is not "set".
    kind = job_stub.UpdateKind(_update(["paused", "max_running_chunks"], name="kinds/implicit")).kind
    assert (kind.paused, kind.max_running_chunks) == (False, 0)
    assert _kinds(client) == {"implicit": (False, 0, 0, 0)}


def test_the_sdk_checks_nothing_the_server_does_not(client: jobpulse.Client) -> None:
    with pytest.raises(ValueError):
        client.update_kind("resize")
    for value in (-1, 1_000_001):
        with pytest.raises(errors.InvalidArgument) as info:
            client.update_kind("resize", max_running_chunks=value)
        assert [f for f, _ in info.value.field_violations] == ["kind.max_running_chunks"]
    assert client.update_kind("resize", max_running_chunks=1_000_000).max_running_chunks == 1_000_000


def test_concurrent_updates_of_different_controls_both_hold(client: jobpulse.Client) -> None:
    # Two callers update a kind that has no row yet, one its pause and one its cap: both hold (one
    # statement each, not a read then a write that could lose the other's field).
    names = [f"race-{i}" for i in range(12)]
    start = threading.Barrier(2)

    def run(update: Callable[[str], Any]) -> None:
        start.wait(10)
        for name in names:
            update(name)

    threads = [
        threading.Thread(target=run, args=(lambda n: client.update_kind(n, paused=True),)),
        threading.Thread(target=run, args=(lambda n: client.update_kind(n, max_running_chunks=3),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert _kinds(client) == {name: (True, 3, 0, 0) for name in names}


# --- who may list and update ----------------------------------------------------------------------


@pytest.fixture
def keyed(make_keyed: Callable[..., tuple[Any, dict[str, str]]]) -> tuple[Any, dict[str, str]]:
    return make_keyed()


def test_only_an_admin_updates_a_kind_and_a_client_counts_its_own_chunks(
    keyed: tuple[Any, dict[str, str]],
) -> None:
    srv, made = keyed
    with (
        jobpulse.Client(srv.address, api_key=made["alice"]) as alice,
        jobpulse.Client(srv.address, api_key=made["bob"]) as bob,
        jobpulse.Client(srv.address, api_key=made["root"]) as root,
        jobpulse.Client(srv.address, api_key=made["w"]) as worker,
    ):
        alice.create_job("shared", 4, chunk_size=1)
        bob.create_job("shared", 2, chunk_size=1)
        bob.create_job("bobs-only", 1)

        with pytest.raises(errors.PermissionDenied):
            alice.update_kind("shared", paused=True)
        with pytest.raises(errors.PermissionDenied):
            worker.update_kind("shared", paused=True)
        assert not root.update_kind("shared", max_running_chunks=2).paused

        # Counts are of the caller's own jobs; a kind with a control is listed to everyone, a worker
        # key too (it owns no jobs): it learns why a kind gets no work.
        assert _kinds(worker) == {"shared": (False, 2, 0, 0)}
        assert _kinds(alice) == {"shared": (False, 2, 4, 0)}
        assert _kinds(bob) == {"bobs-only": (False, 0, 1, 0), "shared": (False, 2, 2, 0)}
        assert _kinds(root) == {"bobs-only": (False, 0, 1, 0), "shared": (False, 2, 6, 0)}


# --- the CLI ---------------------------------------------------------------------------------------


def test_the_cli_lists_pauses_resumes_and_caps_kinds(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", server.address]
    assert cli.main([*target, "kinds"]) == 0
    assert capsys.readouterr().out.startswith("no kinds")
    client.create_job("cli-kind", 3, chunk_size=1)
    client.claim_chunks("w1", kinds=["cli-kind"], max_chunks=1)

    assert cli.main([*target, "kinds", "pause", "cli-kind"]) == 0
    assert capsys.readouterr().out == (
        "kind cli-kind paused: none of its chunks is claimed until it is resumed; running ones finish "
        "(2 pending, 1 running)\n"
    )
    assert cli.main([*target, "kinds", "cap", "cli-kind", "5"]) == 0
    assert "capped: at most 5" in capsys.readouterr().out
    assert cli.main([*target, "kinds"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["KIND", "PAUSED", "CAP", "PENDING", "RUNNING"],
        ["cli-kind", "yes", "5", "2", "1"],
    ]

    assert cli.main([*target, "kinds", "resume", "cli-kind"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert cli.main([*target, "--json", "kinds", "cap", "cli-kind", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["maxRunningChunks"] == 0
    assert cli.main([*target, "kinds", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)["kinds"]
    assert listed == {
        "name": "kinds/cli-kind",
        "kind": "cli-kind",
        "paused": False,
        "maxRunningChunks": 0,
        "pendingChunks": "2",
        "runningChunks": "1",
    }

    with pytest.raises(SystemExit) as usage:
        cli.main([*target, "kinds", "cap", "cli-kind", "-1"])
    assert usage.value.code == 2
    assert "between 0 and 1000000" in capsys.readouterr().err


def test_the_cli_says_a_client_key_may_not_pause_a_kind(
    keyed: tuple[Any, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    srv, made = keyed
    argv = ["--target", srv.address, "--api-key", made["alice"], "kinds", "pause", "shared"]
    assert cli.main(argv) != 0
    assert "may not" in capsys.readouterr().err
    with jobpulse.Client(srv.address, api_key=made["root"]) as root:
        assert _kinds(root) == {}
