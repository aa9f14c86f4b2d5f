"""Hypothesis strategies built from the jobpulse proto descriptors, and the checks applied to every answer.

Request messages are generated generically from each RPC's input descriptor: every scalar type (with
huge, negative and boundary values), open enums with out-of-range numbers, long and unicode strings,
bytes-like strings, nested messages, repeated fields, maps, Struct, Timestamp, Duration and FieldMask
with extreme values. A ``Pools`` snapshot of real ids, lease tokens, page tokens and cursors (taken from
the server's own answers) is mixed in so that deeper code paths run too.
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import strategies as st

from jobpulse.v1 import admin_service_pb2, job_pb2, job_service_pb2, schedule_service_pb2, worker_service_pb2

FD = _descriptor.FieldDescriptor

SERVICES = [
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
]
METHODS: dict[str, _descriptor.MethodDescriptor] = {m.name: m for s in SERVICES for m in s.methods}
# Reads first, destructive RPCs last, so the read paths see the seeded jobs first. RPCs added to the
# protos later are fuzzed too (between the two groups).
_FIRST = [
    "GetUsage", "CreateJob", "GetJob", "ListJobs", "ListJobChunks", "BatchGetJobs", "GetJobStats",
    "WatchJob", "WatchJobs", "ClaimChunks", "ReportChunkProgress", "FailChunk", "CompleteChunk",
]  # fmt: skip
_LAST = ["UpdateJob", "CancelJob", "RetryJob", "DeleteJob", "CancelJobs", "RetryJobs", "PurgeJobs"]
ORDER = [
    *[m for m in _FIRST if m in METHODS],
    *sorted(set(METHODS) - set(_FIRST) - set(_LAST)),
    *[m for m in _LAST if m in METHODS],
]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
# Lengths around every limit the server enforces (128 ids, 256 names, 1024 reasons, 2048 uris, 4096 messages).
BOUNDARY_LENGTHS = [1, 63, 64, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 2048, 2049, 4096, 4097, 20000]
NASTY = [
    "\x00", "a\x00b", "\u202e", "\ufeff", "%", "_", "\\", "'", '"', "'; DROP TABLE jobs; --", "..", "/",
    "~", "-1", "0", "NaN", "null", "\U0001f600" * 3, "é", "\u0301", " ", "\t\n", "\x7f", "\ud7ff",
]  # fmt: skip
LEASE_METHODS = {"ReportChunkProgress", "CompleteChunk", "FailChunk"}


@dataclass
class Pools:
    """Real values taken from the server's answers; a frozen snapshot is used for one RPC's run."""

    job_ids: list[str] = field(default_factory=list)
    chunk_ids: list[str] = field(default_factory=list)
    leases: list[tuple[str, str]] = field(default_factory=list)  # (chunk_id, lease_token)
    # (token, the ListJobs/ListJobChunks fields it was issued for, the listing kind)
    page_tokens: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    revisions: list[int] = field(default_factory=lambda: [0, 1, 2, 3])

    def snapshot(self) -> Pools:
        def cap(items: list[Any]) -> list[Any]:
            return list(dict.fromkeys(items))[-60:]

        return Pools(
            cap(self.job_ids),
            cap(self.chunk_ids),
            cap(self.leases),
            list({t: (t, f, k) for t, f, k in self.page_tokens}.values())[-40:],
            cap(self.cursors),
            cap(self.revisions),
        )

    def learn(self, method: str, response: Message) -> None:
        """Adds the ids and tokens of a successful answer."""
        if method in ("CreateJob", "GetJob"):
            self._job(response.job)
        elif method == "ClaimChunks":
            for claim in response.claims:
                self.leases.append((claim.chunk.id, claim.lease_token))
                self.chunk_ids.append(claim.chunk.id)
        elif method == "ListJobs":
            for job in response.jobs:
                self._job(job)
            if response.watch_cursor:
                self.cursors.append(response.watch_cursor)
        elif method == "ListJobChunks":
            self.chunk_ids.extend(c.id for c in response.chunks)
        elif method == "WatchJobs" and response.cursor:
            self.cursors.append(response.cursor)

    def _job(self, job: job_pb2.Job) -> None:
        if job.id:
            self.job_ids.append(job.id)
            self.revisions.append(job.revision)
            self.chunk_ids.extend(c.id for c in job.chunks[:5])


# --- scalar strategies ------------------------------------------------------------------------------------


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [
        v for v in (lo, lo + 1, -1, 0, 1, 2, 5, 10, 11, 100, 101, 1000, 1001, hi - 1, hi) if lo <= v <= hi
    ]
    return st.one_of(st.sampled_from(edges), st.integers(max(lo, -3), min(hi, 20)), st.integers(lo, hi))


def _floats() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e308, 5e-324]), st.floats()
    )


def _bytes_like() -> st.SearchStrategy[str]:
    """Random bytes rendered the ways a token or id might be: base64url, hex, latin-1."""
    raw = st.binary(min_size=1, max_size=48)
    return st.one_of(
        raw.map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
        raw.map(lambda b: base64.b64encode(b).decode()),
        raw.map(bytes.hex),
        raw.map(lambda b: b.decode("latin-1")),
    )


def _plain_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12),
        st.text(max_size=24),
        st.sampled_from(NASTY),
        _bytes_like(),
        st.tuples(st.sampled_from(BOUNDARY_LENGTHS), st.sampled_from(["x", "é", "\U0001d11e"])).map(
            lambda p: p[1] * p[0]
        ),
    )


def _json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**30, -(10**30)]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
    )


def _json() -> st.SearchStrategy[Any]:
    return st.recursive(
        _json_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )


# --- page tokens and cursors -------------------------------------------------------------------------------


def _decode_token(token: str) -> dict[str, Any] | None:
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _encode_token(body: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def _same_shape(value: Any) -> st.SearchStrategy[Any]:
    """A value of the same JSON type as ``value``, often an extreme one."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(
            st.sampled_from(
                [-1, 0, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]
            ),
            st.integers(),
        )
    if isinstance(value, str):
        return st.one_of(_plain_text(), st.just(value + "~"), st.just(value[:-1]))
    return _json()


@st.composite
def forged_token(draw: st.DrawFn, template: str) -> str:
    """A token derived from a real one: same envelope with an altered key, or an altered envelope."""
    body = _decode_token(template)
    if body is None:
        return template
    body = dict(body)
    how = draw(st.sampled_from(["shape", "shape", "key", "envelope", "raw"]))
    key = body.get("k") if isinstance(body.get("k"), list) else []
    if how == "shape":
        body["k"] = [draw(st.one_of(st.just(v), _same_shape(v))) for v in key]
    elif how == "key":
        body["k"] = draw(st.one_of(_json(), st.lists(_json_scalars(), max_size=4)))
    elif how == "envelope":
        name = draw(st.sampled_from(["v", "t", "f", "k"]))
        body[name] = draw(
            st.one_of(_json_scalars(), st.sampled_from(["jobs", "chunks", "feed", "any", 1, 2]))
        )
        if draw(st.booleans()):
            body.pop(draw(st.sampled_from(["v", "t", "f", "k"])), None)
    else:
        return draw(
            st.one_of(
                st.just(template[:-1]),
                st.just(template + "A"),
                _json().map(_encode_token),
                st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode()),
            )
        )
    return _encode_token(body)


# --- messages -----------------------------------------------------------------------------------------------


def _pick(draw: st.DrawFn, items: list[Any]) -> Any:
    return items[draw(st.integers(0, len(items) - 1))]


def _string_for(draw: st.DrawFn, name: str, pools: Pools) -> str:
    """A string for field ``name``: a pooled real value, a mutation of one, or anything."""
    choices: list[list[str]] = []
    if name in ("job_id", "job_ids") and pools.job_ids:
        choices.append(pools.job_ids)
    if name == "chunk_id" and pools.chunk_ids:
        choices.append(pools.chunk_ids)
    if name == "lease_token" and pools.leases:
        choices.append([t for _, t in pools.leases])
    if name == "page_token" and pools.page_tokens:
        choices.append([t for t, _, _ in pools.page_tokens])
    if name == "cursor" and pools.cursors:
        choices.append(pools.cursors)
    if name in ("kind", "kinds"):
        choices.append(["default", "fuzz", "thumbnails"])
    if choices and draw(st.integers(0, 2)) > 0:
        value: str = _pick(draw, _pick(draw, choices))
        mutate = draw(st.integers(0, 5))
        if mutate == 0 and value:
            return draw(
                st.sampled_from(
                    [value[:-1], value + "0", value.lower(), value + "-999999999999", " " + value]
                )
            )
        if mutate == 1 and name in ("page_token", "cursor"):
            return draw(forged_token(value))
        return value
    any_pool = pools.job_ids + pools.chunk_ids
    if any_pool and draw(st.integers(0, 9)) == 0:
        return _pick(draw, any_pool)
    return draw(_plain_text())


def _timestamp(draw: st.DrawFn, msg: Message) -> None:
    msg.seconds = draw(
        st.one_of(
            st.sampled_from(
                [0, 1, 1_700_000_000, 253402300799, 253402300800, -62135596800, -62135596801, -1]
            ),
            st.integers(0, 4_102_444_800),
            st.integers(*INT64),
        )
    )
    msg.nanos = draw(st.one_of(st.just(0), st.integers(0, 999_999_999), st.integers(*INT32)))


def _duration(draw: st.DrawFn, msg: Message) -> None:
    msg.seconds = draw(
        st.one_of(
            st.integers(0, 3),
            st.sampled_from([60, 61, 86400, 86401, 315576000000, 315576000001, -1, -315576000000]),
            st.integers(*INT64),
        )
    )
    msg.nanos = draw(
        st.one_of(st.just(0), st.integers(0, 999_999_999), st.integers(*INT32), st.just(1_000_000))
    )


def _struct_value() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        _floats(),
        st.text(max_size=20),
        st.sampled_from(NASTY),
        st.sampled_from(["x" * 70_000]),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(_plain_text(), inner, max_size=3)
        ),
        max_leaves=10,
    )


def _set_struct_value(target: Message, value: Any) -> None:
    """Fills a google.protobuf.Value without json_format, so NaN and infinities get through too."""
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, list):
        target.list_value.SetInParent()
        for item in value:
            _set_struct_value(target.list_value.values.add(), item)
    else:
        target.struct_value.SetInParent()
        for k, v in value.items():
            _set_struct_value(target.struct_value.fields[k], v)


def _scalar(draw: st.DrawFn, fd: FD, pools: Pools) -> Any:
    t = fd.type
    if t == FD.TYPE_STRING:
        return _string_for(draw, fd.name, pools)
    if t == FD.TYPE_BYTES:
        return draw(st.binary(max_size=64))
    if t == FD.TYPE_BOOL:
        return draw(st.booleans())
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        value = draw(_floats())
        return value if t == FD.TYPE_DOUBLE or not math.isfinite(value) or abs(value) < 3e38 else 1e38
    if t == FD.TYPE_ENUM:
        valid = [v.number for v in fd.enum_type.values]
        return draw(st.one_of(st.sampled_from(valid), st.sampled_from(valid), _ints(*INT32)))
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return draw(_ints(*INT32))
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        if fd.name in ("after_revision", "revision") and draw(st.booleans()):
            return _pick(draw, pools.revisions)
        return draw(_ints(*INT64))
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return draw(_ints(*UINT32))
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return draw(_ints(*UINT64))
    raise AssertionError(f"unhandled field type {t} of {fd.full_name}")


def _fill(draw: st.DrawFn, msg: Message, pools: Pools, depth: int) -> None:
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        _timestamp(draw, msg)
        return
    if name == "google.protobuf.Duration":
        _duration(draw, msg)
        return
    if name == "google.protobuf.Struct":
        value = draw(st.dictionaries(_plain_text(), _struct_value(), max_size=4))
        for k, v in value.items():
            _set_struct_value(msg.fields[k], v)
        return
    if name == "google.protobuf.FieldMask":
        paths = st.one_of(st.sampled_from(["priority", "labels", "display_name"]), _plain_text())
        msg.paths.extend(draw(st.lists(paths, max_size=4)))
        return
    for fd in msg.DESCRIPTOR.fields:
        if not draw(st.integers(0, 3)):  # leave about a quarter of the fields unset
            continue
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            big = draw(st.integers(0, 15)) == 0
            keys = st.one_of(_plain_text(), st.sampled_from(["env", "team", "k"]))
            values = st.one_of(_plain_text(), st.sampled_from(["prod", "a"]))
            if big:
                entries = {f"k{i}": "v" for i in range(draw(st.sampled_from([64, 65, 200])))}
            else:
                entries = draw(st.dictionaries(keys, values, max_size=4))
            getattr(msg, fd.name).update(entries)
        elif fd.is_repeated:
            size = draw(st.one_of(st.integers(0, 4), st.sampled_from([100, 101])))
            target = getattr(msg, fd.name)
            if fd.message_type is not None:
                # The request's own lists are drawn whole (their sizes probe the limits), the lists
                # inside their items at most four long: a CompleteChunks of 101 completions of up to 101
                # artifacts each took 22 s of a 30 s run, mostly drawing requests too large to send.
                # (The artifacts limit is the same check in CompleteChunk, whose list is the request's.)
                for _ in range(size if depth == 0 else min(size, 4)):
                    _fill(draw, target.add(), pools, depth + 1)
            else:
                first = [_scalar(draw, fd, pools) for _ in range(min(size, 4))]
                target.extend([*first, *([first[-1]] * (size - len(first)) if first else [])])
        elif fd.message_type is not None:
            if depth < 4:
                sub = getattr(msg, fd.name)
                sub.SetInParent()
                _fill(draw, sub, pools, depth + 1)
        else:
            setattr(msg, fd.name, _scalar(draw, fd, pools))


def _cohere(draw: st.DrawFn, method: str, msg: Message, pools: Pools) -> None:
    """Sometimes makes related fields agree, so checks past the first lookup run."""
    if method in LEASE_METHODS and pools.leases and draw(st.integers(0, 2)) == 0:
        msg.chunk_id, msg.lease_token = _pick(draw, pools.leases)
    if method in ("ListJobs", "ListJobChunks"):
        kind = "jobs" if method == "ListJobs" else "chunks"
        tokens = [(t, f) for t, f, k in pools.page_tokens if k == kind]
        if tokens and draw(st.integers(0, 2)) == 0:
            token, fields = _pick(draw, tokens)
            for fd in msg.DESCRIPTOR.fields:
                if fd.name not in ("page_size", "view"):
                    msg.ClearField(fd.name)
            for key, value in fields.items():
                target = getattr(msg, key)
                if isinstance(value, list):
                    target.extend(value)
                else:
                    setattr(msg, key, value)
            msg.page_token = draw(st.one_of(st.just(token), forged_token(token)))
    if method == "WatchJobs" and pools.cursors and draw(st.integers(0, 2)) == 0:
        for fd in msg.DESCRIPTOR.fields:
            msg.ClearField(fd.name)
        msg.cursor = draw(
            st.one_of(st.just(_pick(draw, pools.cursors)), forged_token(_pick(draw, pools.cursors)))
        )
    if method == "ClaimChunks" and msg.HasField("wait") and draw(st.booleans()):
        msg.wait.seconds, msg.wait.nanos = 0, draw(st.sampled_from([0, 1_000_000, 50_000_000]))


def requests(method: str, pools: Pools) -> st.SearchStrategy[Message]:
    """Arbitrary requests of ``method``, built from its input descriptor."""
    cls = _message_class(METHODS[method].input_type)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        _fill(draw, msg, pools, 0)
        _cohere(draw, method, msg, pools)
        return msg

    return build()


def _message_class(desc: _descriptor.Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


# --- calling and checking -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one call ended."""

    method: str
    code: grpc.StatusCode
    responses: list[Message]
    status: Any = None  # google.rpc.Status, if the server sent one
    message: str = ""


def call(
    channel: grpc.Channel,
    method: str,
    request: Message,
    metadata: tuple[tuple[str, str], ...],
    timeout: float = 5.0,
) -> Outcome:
    """Sends ``request`` through a raw channel; streams are read for at most two messages, then cancelled."""
    desc = METHODS[method]
    path = f"/{desc.containing_service.full_name}/{method}"
    reply = _message_class(desc.output_type)
    if not desc.server_streaming:
        fn = channel.unary_unary(path, request_serializer=_serialize, response_deserializer=reply.FromString)
        try:
            response, rpc = fn.with_call(request, timeout=timeout, metadata=metadata)
            return Outcome(method, rpc.code(), [response])
        except grpc.RpcError as exc:
            return _failed(method, exc, [])
    stream = channel.unary_stream(path, request_serializer=_serialize, response_deserializer=reply.FromString)
    got: list[Message] = []
    rpc = stream(request, timeout=timeout, metadata=metadata)
    try:
        for response in rpc:
            got.append(response)
            if len(got) >= 2:
                break
        else:
            return Outcome(method, rpc.code(), got)
    except grpc.RpcError as exc:
        return _failed(method, exc, got)
    finally:
        rpc.cancel()
    return Outcome(method, grpc.StatusCode.OK, got)


def _serialize(msg: Message) -> bytes:
    return msg.SerializeToString()


def _failed(method: str, exc: grpc.RpcError, got: list[Message]) -> Outcome:
    code = exc.code()  # type: ignore[attr-defined]
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:
        status = "mismatched google.rpc.Status"
    return Outcome(method, code, got, status, exc.details() or "")  # type: ignore[attr-defined]


def details(status: Any) -> Iterator[Message]:
    for packed in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if packed.Is(cls.DESCRIPTOR):
                item = cls()
                packed.Unpack(item)
                yield item


def problems(outcome: Outcome, *, client_deadline_ok: bool) -> list[str]:
    """What is wrong with this answer (empty: nothing)."""
    code = outcome.code
    if code == grpc.StatusCode.OK:
        return []
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and client_deadline_ok:
        return []  # our own short deadline on a call that may legitimately block (ClaimChunks wait)
    found = []
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS):
        found.append(f"status {code.name}")
    if code == grpc.StatusCode.UNAVAILABLE:
        found.append("UNAVAILABLE while the database is up")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        found.append("the server did not answer within the deadline")
    if outcome.status is None or isinstance(outcome.status, str):
        found.append(f"no google.rpc.Status ({outcome.status or 'none'})")
        return found
    infos = [d for d in details(outcome.status) if isinstance(d, error_details_pb2.ErrorInfo)]
    if not infos or infos[0].domain != "jobpulse":
        found.append("no ErrorInfo with domain 'jobpulse'")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = [d for d in details(outcome.status) if isinstance(d, error_details_pb2.BadRequest)]
        has_field = any(len(b.field_violations) >= 1 for b in bad)
        if not has_field and not any(i.reason == "INVALID_PAGE_TOKEN" for i in infos):
            found.append("INVALID_ARGUMENT without a field violation or INVALID_PAGE_TOKEN")
    return found


def describe(request: Message, limit: int = 600) -> str:
    text = repr(request.SerializeToString()) if len(str(request)) > limit * 4 else str(request)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# --- health, summaries ---------------------------------------------------------------------------------


def health_status(channel: grpc.Channel, timeout: float = 5.0) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status


SERVING = health_pb2.HealthCheckResponse.SERVING


def unary(
    channel: grpc.Channel, method: str, request: Message, metadata: Any = (), timeout: float = 10
) -> Any:
    """A call that must succeed."""
    outcome = call(channel, method, request, metadata, timeout)
    assert outcome.code == grpc.StatusCode.OK, f"{method} failed: {outcome.code} {outcome.message}"
    return outcome.responses[0]


def all_jobs(channel: grpc.Channel, metadata: Any) -> list[job_pb2.Job]:
    jobs: list[job_pb2.Job] = []
    token = ""
    while True:
        page = unary(
            channel, "ListJobs", job_service_pb2.ListJobsRequest(page_size=100, page_token=token), metadata
        )
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs


def recount(channel: grpc.Channel, job_id: str, metadata: Any) -> dict[str, int]:
    counts = dict.fromkeys(("total", "pending", "processing", "completed", "failed", "cancelled"), 0)
    token = ""
    while True:
        page = unary(
            channel,
            "ListJobChunks",
            job_service_pb2.ListJobChunksRequest(job_id=job_id, page_size=1000, page_token=token),
            metadata,
        )
        for chunk in page.chunks:
            counts["total"] += 1
            counts[job_pb2.ChunkState.Name(chunk.state).removeprefix("CHUNK_STATE_").lower()] += 1
        token = page.next_page_token
        if not token:
            return counts


def summary_dict(job: job_pb2.Job) -> dict[str, int]:
    s = job.chunks_summary
    return {
        "total": s.total,
        "pending": s.pending,
        "processing": s.processing,
        "completed": s.completed,
        "failed": s.failed,
        "cancelled": s.cancelled,
    }


def check_summaries(channel: grpc.Channel, metadata: Any, attempts: int = 5) -> int:
    """Every job's chunks_summary equals a recount of its chunks and sums to total. Returns the job count.

    The sweeper may move chunks while we count (fuzzed leases can be a millisecond long), so a
    comparison only counts when the job's revision did not change around the recount.
    """
    jobs = all_jobs(channel, metadata)
    for listed in jobs:
        for _ in range(attempts):
            before = unary(
                channel, "GetJob", job_service_pb2.GetJobRequest(job_id=listed.id, view=1), metadata
            ).job
            counted = recount(channel, listed.id, metadata)
            after = unary(
                channel, "GetJob", job_service_pb2.GetJobRequest(job_id=listed.id, view=1), metadata
            ).job
            if before.revision == after.revision:
                break
        else:
            raise AssertionError(f"job {listed.id} kept changing; could not recount it")
        summary = summary_dict(before)
        assert summary == counted, f"job {listed.id}: chunks_summary {summary} != recount {counted}"
        assert sum(v for k, v in summary.items() if k != "total") == summary["total"], summary
    return len(jobs)
