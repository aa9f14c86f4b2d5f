"""AIP-214 expiry through a real server, on SQLite and PostgreSQL: CreateJob's ttl, Job.expire_time, and
the sweep that deletes expired jobs (reported to WatchJobs, NOT_FOUND afterwards), trims tombstones and
webhook delivery records. Retention is configured in fractions of a second and the sweep runs every
50 ms, so every wait is a poll with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from support.e2e import BackgroundThread, run_all
from support.polling import eventually
from support.receiver import Receiver
from support.sql import value

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

FAST = {"sweep_interval": 0.05}
DAY = 86_400
# Expiry tests wait longer than the default 10 s on a busy machine.
WAIT = 20.0


@pytest.fixture
def stub_for() -> Iterator[Callable[[Any], job_service_pb2_grpc.JobServiceStub]]:
    """JobService stubs on plain channels: the wire as any client sends it (the SDK's own ``ttl``
    argument is tested in test_the_sdk_sends_ttl)."""
    channels: list[grpc.Channel] = []

    def make(srv: Any) -> job_service_pb2_grpc.JobServiceStub:
        channel = grpc.insecure_channel(srv.address)
        channels.append(channel)
        return job_service_pb2_grpc.JobServiceStub(channel)

    yield make
    for channel in channels:
        channel.close()


def _create(
    stub: job_service_pb2_grpc.JobServiceStub, kind: str, ttl: float | None = None, **fields: Any
) -> job_pb2.Job:
    request = job_service_pb2.CreateJobRequest(kind=kind, total_items=1, **fields)
    if ttl is not None:
        request.ttl.FromNanoseconds(int(ttl * 1e9))
    return stub.CreateJob(request, timeout=10).job


def _us(ts: Any) -> int:
    return int(ts.seconds * 1_000_000 + ts.nanos // 1000)


def _gone(client: jobpulse.Client, job_id: str) -> bool:
    try:
        client.get_job(job_id)
    except errors.NotFound:
        return True
    return False


def _fields(exc: grpc.RpcError) -> list[str]:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    found: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [v.field for v in bad.field_violations]
    return found


def test_expire_time_is_end_time_plus_ttl_once_terminal(
    make_server: Callable[..., Any], connect: Callable[[Any], jobpulse.Client], stub_for: Callable[[Any], Any]
) -> None:
    srv = make_server(retention_completed=7 * DAY, retention_failed=30 * DAY)
    client, stub = connect(srv), stub_for(srv)
    own = _create(stub, "exp-a", ttl=3600)
    default = _create(stub, "exp-a")
    kept = _create(stub, "exp-a", ttl=0)
    for job in (own, default, kept):
        assert not job.HasField("expire_time"), "a job that has not ended has no expire_time"
    assert run_all(client, "exp-a") == 3
    for job_id, ttl_s in ((own.id, 3600), (default.id, 7 * DAY)):
        job = client.get_job(job_id)
        assert job.state == job_pb2.JOB_STATE_COMPLETED
        assert _us(job.expire_time) == _us(job.end_time) + ttl_s * 1_000_000
    assert not client.get_job(kept.id).HasField("expire_time"), "ttl 0 keeps the job for ever"
    # The same in BASIC views: ListJobs and the WatchJob of a finished job.
    listed = {j.id: j for j in client.list_jobs(kind="exp-a")}
    assert _us(listed[own.id].expire_time) == _us(listed[own.id].end_time) + 3600 * 1_000_000
    assert not listed[kept.id].HasField("expire_time")

    # A failed job takes the FAILED default; RetryJob takes expire_time away until it ends again.
    failing = _create(stub, "exp-b")
    claim = client.claim_chunks("w1", kinds=["exp-b"], max_chunks=1)[0]
    client.fail_chunk(claim.chunk.id, claim.lease_token, reason="BROKEN", retryable=False)
    failed = client.get_job(failing.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED
    assert _us(failed.expire_time) == _us(failed.end_time) + 30 * DAY * 1_000_000
    retried = client.retry_job(failing.id)
    assert not retried.HasField("expire_time")
    assert not client.get_job(failing.id).HasField("expire_time")
    run_all(client, "exp-b")
    again = client.get_job(failing.id)
    assert again.state == job_pb2.JOB_STATE_COMPLETED
    assert _us(again.expire_time) == _us(again.end_time) + 7 * DAY * 1_000_000


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-1, 0), (0, -5), (3650 * DAY + 1, 0)],
    ids=["negative", "negative-nanos", "over-3650-days"],
)
def test_bad_ttl_is_invalid_argument_naming_ttl(
    server: Any, job_stub: job_service_pb2_grpc.JobServiceStub, seconds: int, nanos: int
) -> None:
    request = job_service_pb2.CreateJobRequest(
        kind="bad-ttl", total_items=1, ttl=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    with pytest.raises(grpc.RpcError) as info:
        job_stub.CreateJob(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(info.value) == ["ttl"]
    # The longest ttl allowed is taken.
    request.ttl.seconds, request.ttl.nanos = 3650 * DAY, 0
    assert job_stub.CreateJob(request, timeout=10).job.id


def test_expired_jobs_are_deleted_and_reported_to_watch_jobs(
    make_server: Callable[..., Any], connect: Callable[[Any], jobpulse.Client], stub_for: Callable[[Any], Any]
) -> None:
    srv = make_server(retention_completed=0.2, retention_failed=DAY, **FAST)
    client, stub = connect(srv), stub_for(srv)
    cursor = next(iter(client.watch_jobs(kind="exp-c"))).cursor  # the first message: a heartbeat
    expiring = _create(stub, "exp-c")
    kept = _create(stub, "exp-c", ttl=0)
    own_short = _create(stub, "exp-c", ttl=0.3)
    run_all(client, "exp-c")
    failing = _create(stub, "exp-c")  # FAILED: a day's default, not expired in this test
    claim = client.claim_chunks("w1", kinds=["exp-c"], max_chunks=1)[0]
    client.fail_chunk(claim.chunk.id, claim.lease_token, reason="BROKEN", retryable=False)

    deleted: set[str] = set()

    def feed() -> set[str]:
        for msg in client.watch_jobs(kind="exp-c", cursor=cursor, timeout=WAIT):
            deleted.update(msg.deleted_job_ids)
            if {expiring.id, own_short.id} <= deleted:
                return deleted
        return deleted

    watching = BackgroundThread(feed, "feed")
    eventually(
        lambda: _gone(client, expiring.id) and _gone(client, own_short.id), timeout=WAIT, what="expiry"
    )
    assert watching.join(WAIT) >= {expiring.id, own_short.id}
    assert kept.id not in deleted and failing.id not in deleted
    assert client.get_job(kept.id).state == job_pb2.JOB_STATE_COMPLETED
    assert client.get_job(failing.id).state == job_pb2.JOB_STATE_FAILED
    # Watchers of a deleted job get NOT_FOUND, as after DeleteJob.
    with pytest.raises(errors.NotFound):
        next(iter(client.watch_job(expiring.id)))
    with pytest.raises(errors.NotFound):
        list(client.list_job_chunks(expiring.id))


def test_more_expired_jobs_than_one_batch_are_all_deleted(
    make_server: Callable[..., Any], connect: Callable[[Any], jobpulse.Client], stub_for: Callable[[Any], Any]
) -> None:
    # Batches of 3, at most 4 jobs looked at per sweep: 25 jobs take several transactions and sweeps.
    srv = make_server(retention_completed=0.1, retention_batch=3, retention_max_per_sweep=4, **FAST)
    client, stub = connect(srv), stub_for(srv)
    made = [_create(stub, "exp-d").id for _ in range(20)]
    made += [_create(stub, "exp-d", ttl=0.1).id for _ in range(5)]
    kept = _create(stub, "exp-d", ttl=0).id
    run_all(client, "exp-d")
    eventually(
        lambda: [j.id for j in client.list_jobs(kind="exp-d")] == [kept], timeout=WAIT, what="all expired"
    )
    assert all(_gone(client, j) for j in made)


def _tombstones(database_url: str) -> int:
    return int(value(database_url, "SELECT count(*) FROM job_tombstones"))


def test_tombstones_and_webhook_deliveries_are_trimmed(
    make_server: Callable[..., Any],
    connect: Callable[[Any], jobpulse.Client],
    stub_for: Callable[[Any], Any],
    database_url: str,
) -> None:
    receiver = Receiver()
    try:
        srv = make_server(
            retention_completed=DAY,
            tombstone_retention=2.0,  # long enough for the feed below to read it first
            webhook_delivery_retention=0.3,
            webhook_secret="whsec_dGVzdC1yZXRlbnRpb24tc2VjcmV0",
            **FAST,
        )
        client, stub = connect(srv), stub_for(srv)
        # Kept for ever, so its delivery records stay listable: they go by their own retention.
        hooked = _create(stub, "exp-e", ttl=0, webhook_url=receiver.url)
        run_all(client, "exp-e")
        eventually(lambda: len(receiver.received) >= 1, timeout=WAIT, what="the webhook POST")
        eventually(
            lambda: client.list_webhook_deliveries(hooked.id) == [], timeout=WAIT, what="deliveries trimmed"
        )

        # A deleted job's tombstone is what reports it to WatchJobs; it goes after tombstone_retention,
        # but for the newest one (on SQLite it carries the largest change_seq handed out).
        doomed = [_create(stub, "exp-e", ttl=0), _create(stub, "exp-e", ttl=0)]
        cursor = client.list_jobs_page(kind="exp-e").watch_cursor
        for job in doomed:
            client.delete_job(job.id, force=True)
        seen: list[str] = []
        for msg in client.watch_jobs(kind="exp-e", cursor=cursor, timeout=WAIT):
            seen += msg.deleted_job_ids
            if len(seen) == 2:
                break
        assert seen == [j.id for j in doomed]
        eventually(lambda: _tombstones(database_url) == 1, timeout=WAIT, what="tombstones trimmed")
        # A cursor from before trimmed tombstones could miss deletions: refused, not resumed silently.
        with pytest.raises(errors.InvalidArgument) as refused:
            next(iter(client.watch_jobs(kind="exp-e", cursor=cursor, timeout=WAIT)))
        assert "too old" in str(refused.value)
        # A fresh listing's cursor follows on: the next deletion is reported.
        fresh = client.list_jobs_page(kind="exp-e").watch_cursor
        client.delete_job(hooked.id, force=True)
        after = next(
            m for m in client.watch_jobs(kind="exp-e", cursor=fresh, timeout=WAIT) if m.deleted_job_ids
        )
        assert list(after.deleted_job_ids) == [hooked.id]
    finally:
        receiver.close()


def test_the_sdk_sends_ttl(
    make_server: Callable[..., Any], connect: Callable[[Any], jobpulse.Client]
) -> None:
    from datetime import timedelta

    srv = make_server(retention_completed=7 * DAY)
    client = connect(srv)
    hour = client.create_job("exp-sdk", 1, ttl=timedelta(hours=1))
    kept = client.create_job("exp-sdk", 1, ttl=0)

    async def create_async() -> job_pb2.Job:
        async with jobpulse.AsyncClient(srv.address) as aclient:
            return await aclient.create_job("exp-sdk", 1, ttl=90.5)

    half = asyncio.run(create_async())
    assert run_all(client, "exp-sdk") == 3
    for job_id, ttl_us in ((hour.id, 3_600_000_000), (half.id, 90_500_000)):
        job = client.get_job(job_id)
        assert _us(job.expire_time) == _us(job.end_time) + ttl_us
    assert not client.get_job(kept.id).HasField("expire_time"), "ttl=0 from the SDK keeps the job"
