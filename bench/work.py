"""Chunk workers, shared by the SQLite throughput rows (scenarios.py) and the PostgreSQL peer (pg_peer.py).

A worker loops claim -> complete in one of four ways (``MODES``):

* one-by-one: ClaimChunks(max_chunks=1), then CompleteChunk;
* complete-and-claim: one ClaimChunks(max_chunks=1), then CompleteChunk with ``claim_next`` (the same
  ClaimChunksRequest) and the claim it returns; ClaimChunks again only when that comes back empty;
* batched: ClaimChunks(max_chunks=10), then CompleteChunk for each of the 10;
* batched with CompleteChunks: ClaimChunks(max_chunks=10) once, then CompleteChunks of the 10 with
  ``claim_next`` (max_chunks=10) and the claims it returns.

A worker stops when ``keep_going()`` turns false (it first completes what it holds, without asking for
more) or when a claim comes back empty (``ran_dry``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import grpc
from google.protobuf import duration_pb2

from jobpulse.v1 import worker_service_pb2, worker_service_pb2_grpc


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    short: str
    max_chunks: int  # per claim
    complete_chunks: bool  # one CompleteChunks per claim, not a CompleteChunk per chunk
    claim_next: bool  # the completion call also claims the next chunks


_CLAIM_NEXT_1 = "complete-and-claim (claim_next, 1)"
_CLAIM_NEXT_10 = "batched, CompleteChunks + claim_next (10)"
MODES = {
    m.key: m
    for m in (
        Mode("one_by_one", "one-by-one (max_chunks=1)", "one-by-one", 1, False, False),
        Mode("complete_and_claim", _CLAIM_NEXT_1, "complete-and-claim", 1, False, True),
        Mode("batched", "batched (max_chunks=10)", "batched", 10, False, False),
        Mode("batched_complete_chunks", _CLAIM_NEXT_10, "CompleteChunks", 10, True, True),
    )
}


@dataclass
class Counts:
    chunks: int = 0  # completions that committed
    rpcs: int = 0
    claim_calls: int = 0  # ClaimChunks calls
    claimed_next: int = 0  # chunks that came back through claim_next
    claim_next_empty: int = 0  # completions with claim_next that returned no claims
    not_ok: int = 0  # CompleteChunks items that did not commit
    ran_dry: bool = False

    def add(self, other: Counts) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, (mine or theirs) if isinstance(mine, bool) else mine + theirs)

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


async def supported(stub: worker_service_pb2_grpc.WorkerServiceStub, mode: Mode, timeout: float) -> bool:
    """False if the server answers UNIMPLEMENTED to the RPC the mode needs (CompleteChunks)."""
    if not mode.complete_chunks:
        return True
    try:
        await stub.CompleteChunks(worker_service_pb2.CompleteChunksRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


async def worker(
    stub: worker_service_pb2_grpc.WorkerServiceStub,
    mode: Mode,
    *,
    worker_id: str,
    lease: duration_pb2.Duration,
    keep_going: Callable[[], bool],
    counts: Counts,
    timeout: float,
    kinds: Sequence[str] = (),
) -> None:
    """Claims and completes chunks until ``keep_going()`` is false or there is no work; counts into
    ``counts`` as it goes (so a caller sharing one ``Counts`` sees the totals). ``kinds``: claim only
    chunks of jobs of these kinds (every claim, claim_next too); empty, any kind."""
    claim = worker_service_pb2.ClaimChunksRequest(
        worker_id=worker_id, kinds=kinds, max_chunks=mode.max_chunks, lease_duration=lease
    )
    held: list[worker_service_pb2.ChunkClaim] = []
    while True:
        if not held:
            if not keep_going():
                return
            held = list((await stub.ClaimChunks(claim, timeout=timeout)).claims)
            counts.rpcs += 1
            counts.claim_calls += 1
            if not held:
                counts.ran_dry = True
                return
        # Past the end: complete what is held without asking for more, so nothing is left claimed.
        claim_next = claim if mode.claim_next and keep_going() else None
        if mode.complete_chunks:
            done = [
                worker_service_pb2.ChunkCompletion(chunk_id=c.chunk.id, lease_token=c.lease_token)
                for c in held
            ]
            request = worker_service_pb2.CompleteChunksRequest(completions=done, claim_next=claim_next)
            batch = await stub.CompleteChunks(request, timeout=timeout)
            counts.rpcs += 1
            ok = sum(1 for r in batch.results if r.ok)
            counts.chunks += ok
            counts.not_ok += len(held) - ok
            got = batch.claims
        else:
            got = None
            for i, c in enumerate(held):
                last = claim_next if i == len(held) - 1 else None
                one_request = worker_service_pb2.CompleteChunkRequest(
                    chunk_id=c.chunk.id, lease_token=c.lease_token, claim_next=last
                )
                one = await stub.CompleteChunk(one_request, timeout=timeout)
                counts.rpcs += 1
                counts.chunks += 1
                got = one.claims
        held = []
        if claim_next is not None:
            if got:
                held = list(got)
                counts.claimed_next += len(held)
            else:
                counts.claim_next_empty += 1
