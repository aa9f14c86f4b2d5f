"""Messages as dicts in the proto3 JSON mapping, as ``json_format.MessageToDict`` makes them (lowerCamel
names, fields with default values left out, 64-bit integers as strings, enums by name, Timestamp,
Duration and FieldMask as strings), several times faster: the JSON face encodes every response with it.

``json_format`` walks each message through generic descriptor code, field by field. Here each message
type gets a table once (field number -> JSON name and converter) and a message is encoded from
``ListFields()`` (upb's own list of the fields set, which in proto3 are the ones JSON prints). Struct,
Value, ListValue, Any and the wrappers go to ``json_format`` itself: they are rare here (job metadata).
tests/unit/test_json_encode.py holds the two to the same output.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal.type_checkers import ToShortestFloat
from google.protobuf.message import Message

Convert = Callable[[Any], Any]

_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SINT64,
    }
)
# Well-known types written as a string by their own ToJsonString.
_AS_STRING = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"})
# Well-known types left to json_format.
_DELEGATED = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)

# message full name -> field number -> (JSON name, converter or None for the value as it is)
_TABLES: dict[str, dict[int, tuple[str, Convert | None]]] = {}


# Messages whose JSON is kept by their bytes (``JsonMemo``): a job is listed and got again and again
# unchanged, and its JSON is most of a ListJobs or GetJob answer.
MEMOIZED = frozenset({"jobpulse.v1.Job"})


class JsonMemo:
    """JSON text of messages by their deterministic serialization, up to ``budget`` bytes of both (then
    emptied and filled again): equal bytes are an equal message, so a hit is always right, and a job
    that changed has other bytes. Serializing (upb, in C) costs a few microseconds where the JSON of a job
    costs tens."""

    def __init__(self, budget: int = 16 * 1024 * 1024) -> None:
        self.budget = budget
        self.size = 0
        self.texts: dict[bytes, str] = {}

    def json(self, message: Message) -> str:
        key = message.SerializeToString(deterministic=True)
        text = self.texts.get(key)
        if text is None:
            text = json.dumps(to_dict(message), separators=(",", ":"))
            if self.size + len(key) + len(text) > self.budget:
                self.texts.clear()
                self.size = 0
            self.texts[key] = text
            self.size += len(key) + len(text)
        return text


_MEMO = JsonMemo()


def to_json(message: Message, memo: JsonMemo | None = _MEMO) -> str:
    """``message`` as proto3 JSON text (compact), the messages of MEMOIZED types in it from ``memo``."""
    descriptor = message.DESCRIPTOR
    if memo is None or descriptor.full_name in _AS_STRING or descriptor.full_name in _DELEGATED:
        return json.dumps(to_dict(message), separators=(",", ":"))
    if descriptor.full_name in MEMOIZED:
        return memo.json(message)
    table = _TABLES.get(descriptor.full_name)
    if table is None:
        table = _table(descriptor)
    parts = []
    for field, value in message.ListFields():
        name, convert = table[field.number]
        kind = field.message_type
        if kind is not None and kind.full_name in MEMOIZED:
            text = "[" + ",".join(map(memo.json, value)) + "]" if field.is_repeated else memo.json(value)
        else:
            text = json.dumps(value if convert is None else convert(value), separators=(",", ":"))
        parts.append(f'"{name}":{text}')
    return "{" + ",".join(parts) + "}"


def to_dict(message: Message) -> Any:
    """``message`` in the proto3 JSON mapping (a dict; a string or other value for the well-known types
    that JSON writes so)."""
    return _message(message.DESCRIPTOR)(message)


def _message(descriptor: Any) -> Convert:
    name = descriptor.full_name
    if name in _AS_STRING:
        return _json_string
    if name in _DELEGATED:
        return _delegated
    return _encode


def _encode(message: Message) -> dict[str, Any]:
    table = _TABLES.get(message.DESCRIPTOR.full_name)
    if table is None:
        table = _table(message.DESCRIPTOR)
    out = {}
    for field, value in message.ListFields():
        name, convert = table[field.number]
        out[name] = value if convert is None else convert(value)
    return out


def _table(descriptor: Any) -> dict[int, tuple[str, Convert | None]]:
    table = {f.number: (f.json_name, _field(f)) for f in descriptor.fields}
    _TABLES[descriptor.full_name] = table
    return table


def _json_string(message: Any) -> str:
    return str(message.ToJsonString())


def _delegated(message: Message) -> Any:
    return json_format.MessageToDict(message)


def _field(field: FieldDescriptor) -> Convert | None:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        convert_value = _single(value)
        if key.type == FieldDescriptor.TYPE_BOOL:
            return lambda m: {("true" if k else "false"): _apply(convert_value, v) for k, v in m.items()}
        return lambda m: {str(k): _apply(convert_value, v) for k, v in m.items()}
    single = _single(field)
    if field.is_repeated:
        if single is None:
            return list
        return lambda values: [single(v) for v in values]
    return single


def _apply(convert: Convert | None, value: Any) -> Any:
    return value if convert is None else convert(value)


def _single(field: FieldDescriptor) -> Convert | None:
    kind = field.type
    if field.message_type is not None:
        return _message(field.message_type)
    if kind in _INT64:
        return str
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda number: names.get(number, number)
    if kind == FieldDescriptor.TYPE_BYTES:
        return lambda data: base64.b64encode(data).decode("ascii")
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.TYPE_FLOAT:
        return _float
    return None


def _double(value: float) -> Any:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _float(value: float) -> Any:
    if math.isfinite(value):
        return ToShortestFloat(value)  # float32 as its shortest decimal form, as json_format writes it
    return _double(value)
