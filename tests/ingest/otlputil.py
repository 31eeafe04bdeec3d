"""OTLP protobuf values built for the tests (opentelemetry-proto's classes)."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.common.v1 import common_pb2


def any_value(value: Any) -> common_pb2.AnyValue:
    v = common_pb2.AnyValue()
    if value is None:
        pass  # an AnyValue with no value set
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    elif isinstance(value, list):
        v.array_value.values.extend(any_value(x) for x in value)
        if not value:
            v.array_value.SetInParent()  # an empty array, set
    elif isinstance(value, dict):
        v.kvlist_value.values.extend(kv(k, x) for k, x in value.items())
        if not value:
            v.kvlist_value.SetInParent()  # an empty kvlist, set
    return v


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    out = common_pb2.KeyValue(key=key)
    out.value.CopyFrom(any_value(value))
    return out
