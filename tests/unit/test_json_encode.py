"""wire/json_encode.py writes what json_format writes: for every message type of jobpulse's protos, filled
at random (every scalar type, enums with unknown numbers, maps, repeated and nested fields, Timestamp,
Duration, FieldMask, Struct), ``to_dict`` equals ``json_format.MessageToDict`` and ``to_json`` parses to
the same, with the memo of jobs or without, hit or missed."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from jobpulse.v1 import admin_service_pb2, job_pb2, job_service_pb2, worker_service_pb2
from jobpulse_server.wire.json_encode import JsonMemo, to_dict, to_json

_MESSAGES = sorted(
    (
        m._concrete_class  # type: ignore[attr-defined]
        for module in (job_pb2, job_service_pb2, worker_service_pb2, admin_service_pb2)
        for m in module.DESCRIPTOR.message_types_by_name.values()
    ),
    key=lambda c: c.DESCRIPTOR.full_name,
)
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(draw: Any, field: FieldDescriptor) -> Any:
    kind = field.type
    if kind in _INTS:
        low, high = _INTS[kind]
        return draw(st.one_of(st.just(0), st.integers(low, high)))
    if kind == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if kind == FieldDescriptor.TYPE_STRING:
        return draw(st.text(max_size=8))
    if kind == FieldDescriptor.TYPE_BYTES:
        return draw(st.binary(max_size=8))
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return draw(st.one_of(st.floats(allow_nan=False), st.just(0.0), st.just(0.5)))
    if kind == FieldDescriptor.TYPE_FLOAT:
        return draw(st.floats(width=32, allow_nan=False))
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return draw(st.one_of(st.sampled_from(numbers), st.integers(100, 120)))  # unknown numbers too
    raise AssertionError(kind)


def _fill(draw: Any, message: Message, depth: int) -> None:
    descriptor: Descriptor = message.DESCRIPTOR
    name = descriptor.full_name
    if name == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(0, 253402300799))  # type: ignore[attr-defined]
        message.nanos = draw(st.sampled_from([0, 5_000_000, 5_000, 5, 999_999_999]))  # type: ignore[attr-defined]
        return
    if name == "google.protobuf.Duration":
        seconds = draw(st.integers(0, 315576000000))
        message.seconds = seconds  # type: ignore[attr-defined]
        message.nanos = draw(st.sampled_from([0, 1_000_000, 1_000, 1]))  # type: ignore[attr-defined]
        return
    if name == "google.protobuf.FieldMask":
        message.paths.extend(draw(st.lists(st.sampled_from(["a", "b_c", "d.e_f"]), max_size=3)))  # type: ignore[attr-defined]
        return
    if name == "google.protobuf.Struct":
        json_format.ParseDict(
            draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)), message
        )
        return
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            key_field, value_field = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 2))):
                key = _scalar(draw, key_field)
                target = getattr(message, field.name)
                if value_field.message_type is not None:
                    if depth < 3:
                        _fill(draw, target[key], depth + 1)
                else:
                    target[key] = _scalar(draw, value_field)
            continue
        if field.is_repeated:
            for _ in range(draw(st.integers(0, 2))):
                if message_type is not None:
                    if depth < 3:
                        _fill(draw, getattr(message, field.name).add(), depth + 1)
                else:
                    getattr(message, field.name).append(_scalar(draw, field))
            continue
        if message_type is not None:
            if depth < 3:
                _fill(draw, getattr(message, field.name), depth + 1)
                getattr(message, field.name).SetInParent()
        else:
            setattr(message, field.name, _scalar(draw, field))


@st.composite
def messages(draw: Any) -> Message:
    message: Message = draw(st.sampled_from(_MESSAGES))()
    _fill(draw, message, 0)
    return message


@settings(max_examples=400, deadline=None)
@given(messages())
def test_the_fast_encoder_writes_what_json_format_writes(message: Message) -> None:
    expected = json_format.MessageToDict(message)
    assert to_dict(message) == expected
    memo = JsonMemo()
    assert json.loads(to_json(message, memo)) == expected
    assert json.loads(to_json(message, memo)) == expected  # a hit, if it holds a job
    assert json.loads(to_json(message, None)) == expected


def test_the_memo_empties_itself_at_its_budget() -> None:
    memo = JsonMemo(budget=2_000)
    for i in range(100):
        job = job_pb2.Job(id=f"job-{i}", kind="k", total_items=i)
        assert json.loads(memo.json(job)) == json_format.MessageToDict(job)
        assert memo.size <= 2_000
    assert 0 < len(memo.texts) < 100
