"""Validation (InvalidEvent) and redaction before anything is written."""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import sanitise
from pipeline.sanitise import DEFAULT_SANITISER, REDACTED, InvalidEvent, Sanitiser, luhn_ok

S = DEFAULT_SANITISER


def reason(event: Any, sanitiser: Sanitiser = S) -> str:
    with pytest.raises(InvalidEvent) as ei:
        sanitiser.prepare(event)
    assert ei.value.reason
    assert "not written" in ei.value.diagnostics()
    return ei.value.reason


def nested_dicts(depth: int) -> dict[str, Any]:
    """An event whose nesting depth (the event itself counting 1) is ``depth``."""
    event: dict[str, Any] = {}
    cur = event
    for _ in range(depth - 1):
        cur["a"] = {}
        cur = cur["a"]
    return event


def nested_lists(depth: int) -> dict[str, Any]:
    v: Any = 1
    for _ in range(depth - 1):
        v = [v]
    return {"a": v}


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("event", [[1, 2], "text", 42, None, 1.5, True, b"{}", ("a", 1)])
def test_not_a_json_object(event: Any) -> None:
    assert reason(event) == "not-an-object"


@pytest.mark.parametrize("event", [{1: "x"}, {"a": {None: 1}}, {"a": [{(1, 2): 3}]}, {b"k": 1}])
def test_non_string_keys(event: Any) -> None:
    assert reason(event) == "non-string-key"


@pytest.mark.parametrize("value", [object(), b"bytes", {1, 2}, complex(1, 2), Exception("x"), 2**64, -(2**64)])
def test_unserialisable_values(value: Any) -> None:
    assert reason({"a": value}) in {"not-serialisable", "int-range"}
    assert reason({"deep": [{"x": value}]}) in {"not-serialisable", "int-range"}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity(value: float) -> None:
    assert reason({"a": value}) == "not-finite"
    assert reason({"a": [1, {"b": [value]}]}) == "not-finite"
    assert reason({"a": None, "b": {"c": value}}) == "not-finite"


@pytest.mark.parametrize(
    "raw",
    [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":[1,{"b":NaN}]}', b'{"a":1e400}'],
)
def test_nan_and_infinity_in_raw_json(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        S.prepare_json(raw)


@pytest.mark.parametrize("event", [{"a": "\ud800"}, {"\udfff": 1}, {"a": ["ok", {"b": "x\udc00y"}]}])
def test_lone_surrogates(event: Any) -> None:
    assert reason(event) == "bad-utf8"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":"\xff"}',  # invalid UTF-8 byte
        b'{"a":"\xc3"}',  # truncated sequence
        b'{"a":"\xed\xa0\x80"}',  # UTF-8-encoded surrogate
        b'{"\xfe":1}',
        b'{"a":"\\ud800"}',  # escaped lone surrogate
        b'{"a":"\\udc00x"}',
    ],
)
def test_invalid_utf8_and_surrogates_in_raw_json(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as ei:
        S.prepare_json(raw)
    assert ei.value.reason in {"bad-utf8", "bad-json"}


def test_lone_surrogate_in_str_input_to_prepare_json() -> None:
    with pytest.raises(InvalidEvent) as ei:
        S.prepare_json('{"a":"\ud800"}')
    assert ei.value.reason == "bad-utf8"


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b"null", b"not json", b"", b'{"a":1}{"b":2}', b'{"a":1,}'])
def test_raw_json_not_an_object_or_malformed(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        S.prepare_json(raw)


def test_raw_json_valid() -> None:
    assert orjson.loads(S.prepare_json(b'{"a": [1, 2], "b": "\xc3\xa9"}')) == {"a": [1, 2], "b": "é"}
    assert orjson.loads(S.prepare_json('{"a": "é"}')) == {"a": "é"}


@pytest.mark.parametrize("make", [nested_dicts, nested_lists])
def test_nesting_exactly_64_accepted(make: Any) -> None:
    out = S.prepare(make(64))
    assert orjson.loads(out) == make(64)


@pytest.mark.parametrize("make", [nested_dicts, nested_lists])
@pytest.mark.parametrize("depth", [65, 66, 200, 300, 5000])
def test_nesting_deeper_than_64_refused(make: Any, depth: int) -> None:
    assert reason(make(depth)) == "too-deep"


def test_nesting_limit_in_raw_json() -> None:
    ok = b'{"a":' * 63 + b"{}" + b"}" * 63
    assert S.prepare_json(ok)
    deep = b'{"a":' * 64 + b"{}" + b"}" * 64
    with pytest.raises(InvalidEvent):
        S.prepare_json(deep)


def test_nesting_limit_configurable() -> None:
    small = Sanitiser(max_depth=3)
    assert small.prepare(nested_dicts(3))
    assert reason(nested_dicts(4), small) == "too-deep"


def test_larger_than_limit() -> None:
    limit = S.max_event_bytes
    assert limit == 1 << 20
    overhead = len(orjson.dumps({"a": ""}))
    assert len(S.prepare({"a": "x" * (limit - overhead)})) == limit
    assert reason({"a": "x" * (limit - overhead + 1)}) == "too-large"
    with pytest.raises(InvalidEvent) as ei:
        S.prepare_json(orjson.dumps({"a": "x" * (limit + 1)}))
    assert ei.value.reason == "too-large"


def test_size_limit_configurable() -> None:
    small = Sanitiser(max_event_bytes=100)
    small.prepare({"a": "x" * 50})
    assert reason({"a": "x" * 100}, small) == "too-large"


# ------------------------------------------------------------------ redaction


def prep(event: Any, sanitiser: Sanitiser = S) -> Any:
    return orjson.loads(sanitiser.prepare(event))


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "Password", "db_password", "passwd", "secret", "client_secret", "token",
     "X-Auth-Token", "Authorization", "api_key", "API_KEY", "apiKey", "private_key", "cookie", "session_id",
     "aws_secret_access_key", "credentials"],
)
def test_secret_keys_case_insensitive(key: str) -> None:
    assert prep({key: "hunter2", "user": "alice"}) == {key: REDACTED, "user": "alice"}


def test_secret_keys_nested_and_in_lists() -> None:
    event: dict[str, Any] = {
        "user": "alice",
        "req": {"headers": {"Authorization": "xyz", "Accept": "json"}},
        "items": [{"password": "p1"}, {"name": "n", "nested": [{"Secret": {"deep": "v"}}]}],
    }
    out = prep(event)
    assert out == {
        "user": "alice",
        "req": {"headers": {"Authorization": REDACTED, "Accept": "json"}},
        "items": [{"password": REDACTED}, {"name": "n", "nested": [{"Secret": REDACTED}]}],
    }
    assert event["req"]["headers"]["Authorization"] == "xyz"  # the caller's object is untouched


def test_secret_key_with_non_string_value() -> None:
    out = prep({"token": {"a": 1, "b": [1, 2]}, "password": 123456})
    assert out == {"token": REDACTED, "password": REDACTED}


def test_aws_access_key_id() -> None:
    for key_id in ("AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"):
        out = prep({"msg": f"used key {key_id} today", "k": key_id})
        blob = orjson.dumps(out)
        assert key_id.encode() not in blob
        assert out["msg"].startswith("used key ") and out["msg"].endswith(" today")


def test_bearer_token() -> None:
    tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig_abc-123"
    out = prep({"header": f"Authorization: Bearer {tok}", "h2": f"bearer {tok}"})
    assert tok.encode() not in orjson.dumps(out)
    assert "abc-123" not in out["header"]


def test_private_key_block() -> None:
    body = "MIIEowIBAAKCAQEAx4gdvKzXG2vT6Uo9n2Y9aQ3lTQ0cVBhxW9pG0bqYwGEJp8pX"
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    out = prep({"k": f"key:\n{pem}\nend", "e": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}"})
    blob = orjson.dumps(out)
    assert body.encode() not in blob
    assert out["k"].startswith("key:\n") and out["k"].endswith("\nend")


@pytest.mark.parametrize(
    "card",
    ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "378282246310005",
     "6011111111111117"],
)
def test_card_numbers_passing_luhn(card: str) -> None:
    assert luhn_ok(card.replace(" ", "").replace("-", ""))
    out = prep({"card": card, "note": f"paid with {card}.", "list": [card]})
    blob = orjson.dumps(out)
    assert card.encode() not in blob
    assert card.replace(" ", "").replace("-", "").encode() not in blob
    assert out["note"].startswith("paid with ")


def test_card_number_as_integer() -> None:
    out = prep({"pan": 4111111111111111})
    assert b"4111111111111111" not in orjson.dumps(out)


def test_luhn_invalid_16_digits_not_redacted() -> None:
    assert not luhn_ok("4111111111111112")
    assert prep({"n": "4111111111111112", "i": 4111111111111112}) == {"n": "4111111111111112", "i": 4111111111111112}


def test_epoch_ms_not_redacted() -> None:
    for ts in (1700000000000, 1798761600000, 1234567890123):
        assert prep({"ts": ts, "s": str(ts)}) == {"ts": ts, "s": str(ts)}


def test_marker_does_not_reveal_value() -> None:
    secrets = ["hunter2-very-private-x9", "AKIAIOSFODNN7EXAMPLE", "4111111111111111"]
    out = S.prepare({"password": secrets[0], "a": secrets[1], "c": secrets[2]})
    import hashlib

    for s in secrets:
        assert s.encode() not in out
        assert hashlib.sha256(s.encode()).hexdigest().encode() not in out
        assert s[-4:].encode() not in out  # not even a suffix


def test_redaction_off() -> None:
    off = Sanitiser(redact=False)
    event = {"password": "hunter2", "k": "AKIAIOSFODNN7EXAMPLE", "c": "4111111111111111",
             "h": "Bearer abcdefghijkl"}
    assert prep(event, off) == event


def test_value_redaction_off_keeps_key_redaction() -> None:
    keys_only = Sanitiser(redact_values=False)
    out = prep({"password": "hunter2", "k": "AKIAIOSFODNN7EXAMPLE"}, keys_only)
    assert out == {"password": REDACTED, "k": "AKIAIOSFODNN7EXAMPLE"}


def test_custom_secret_keys() -> None:
    custom = Sanitiser(secret_keys=["ssn"])
    assert prep({"password": "x", "SSN": "1", "user_ssn_hash": "2"}, custom) == {
        "password": "x", "SSN": REDACTED, "user_ssn_hash": REDACTED}


def test_clean_event_bytes_unchanged() -> None:
    event = {"user": "alice", "n": 3, "f": 1.5, "ok": True, "none": None, "l": [1, "two"], "é": "ü"}
    assert S.prepare(event) == orjson.dumps(event)


# ------------------------------------------------------------------ property

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None), max_size=30)  # includes lone surrogates
    | st.sampled_from(["AKIAIOSFODNN7EXAMPLE", "4111 1111 1111 1111", "Bearer abcdefghijk", "password"])
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.sampled_from(["token", "Password"]), children, max_size=4),
    max_leaves=25,
)
json_dict = st.dictionaries(st.text(alphabet=st.characters(codec=None), max_size=12), json_value, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_dict)
def test_property_prepare_bytes_or_invalid(event: dict[str, Any]) -> None:
    try:
        out = S.prepare(event)
    except InvalidEvent:
        return
    assert isinstance(out, bytes)
    assert isinstance(orjson.loads(out), dict)
    assert len(out) <= S.max_event_bytes
    assert b"\n" not in out


@settings(max_examples=150, deadline=None)
@given(json_dict)
def test_property_without_redaction_round_trips(event: dict[str, Any]) -> None:
    off = Sanitiser(redact=False)
    try:
        out = off.prepare(event)
    except InvalidEvent:
        return
    assert orjson.loads(out) == event


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80) | json_dict.map(lambda d: orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS)
                                              if _dumpable(d) else b"{}"))
def test_property_prepare_json_bytes_or_invalid(raw: bytes) -> None:
    try:
        out = S.prepare_json(raw)
    except InvalidEvent:
        return
    assert isinstance(orjson.loads(out), dict)


def _dumpable(d: Any) -> bool:
    try:
        orjson.dumps(d)
        return True
    except orjson.JSONEncodeError:
        return False


# ------------------------------------------------------------------ key caches


def _cached_keys(s: Sanitiser) -> list[str]:
    c = s._c
    return [*c.key_cache, *c.key_verdicts, *(k for keys in c.keyset_cache for k in keys)]


def _huge_key_event(place: str, i: int, secret: bool) -> dict[str, Any]:
    key = f"{i:06d}{'password' if secret else 'id'}" + "x" * (512 << 10)
    if place == "text":
        return {"msg": f"{key}=v-1"}
    return {key: "v-1", "n": 1} if place == "flat" else {"a": {key: "v-1"}, "n": 1}


@pytest.mark.parametrize("place", ["text", "flat", "nested"])
def test_huge_keys_are_judged_each_time_not_cached(place: str) -> None:
    """A 512 KiB key name (free text "xxxx...=v", a JSON key, a nested one) is judged each
    time it comes and never kept by the key caches: 64 distinct ones grow memory by the few
    MiB one event takes, not by 32 MiB (each key kept: ~0.5 MiB an event, up to 65,536 of
    them).  Their verdicts are as before: a secret-looking one is redacted every time."""
    from tests.rss import rss_growth

    s = Sanitiser()
    s.prepare(_huge_key_event(place, 0, False))  # warm up
    tracemalloc.start()
    try:
        with rss_growth() as growth:
            for i in range(1, 65):
                s.prepare(_huge_key_event(place, i, False))
        kept, _ = tracemalloc.get_traced_memory()  # what the 64 events left allocated
    finally:
        tracemalloc.stop()
    assert kept < 1 << 20, (place, kept)
    assert growth.mib < 12, (place, growth.base, growth.peak)
    assert all(len(k) <= 256 for k in _cached_keys(s)), place
    for _ in range(2):
        event = _huge_key_event(place, 99, True)
        out = orjson.loads(s.prepare(event))
        assert "v-1" not in orjson.dumps(out).decode(), place
        clean = _huge_key_event(place, 98, False)
        assert s.prepare(clean) == orjson.dumps(clean)
    assert all(len(k) <= 256 for k in _cached_keys(s)), place


def test_key_cache_bounds() -> None:
    """Keys of up to 256 characters are cached, longer ones not; a key set is cached when its
    keys are, up to a sixteenth of the key-set budget, and the key-set cache is cleared
    before it would hold more than the budget.  Either way the event is stored the same."""
    s = Sanitiser()
    c = s._c
    for n in (256, 257):
        key = "k" * n
        for event in ({key: 1}, {"a": {key: 1}}, {"m": f"{key}=v"}):
            assert s.prepare(event) == orjson.dumps(event) == s.prepare(event)
        assert (key in c.key_cache, key in c.key_verdicts, (key,) in c.keyset_cache) == ((n == 256,) * 3)
    entry_max = sanitise._KEYSET_CACHE_BUDGET // 16
    per_key = 10 + sanitise._KEYSET_KEY_COST
    sets = {"200 keys": tuple(f"k{i:09d}" for i in range(200)),
            "a sixteenth": tuple(f"k{i:09d}" for i in range(entry_max // per_key)),
            "more": tuple(f"k{i:09d}" for i in range(entry_max // per_key + 1)),
            "a long key": ("a", "k" * 257)}
    for name, keys in sets.items():
        event = dict.fromkeys(keys, 1)
        assert s.prepare(event) == orjson.dumps(event) == s.prepare(event)
        assert (keys in c.keyset_cache) == (name in ("200 keys", "a sixteenth")), name
        secret = {**dict.fromkeys(keys[1:], 1), "password": "hunter2"}
        assert s.prepare(secret) == s.prepare(secret) == orjson.dumps({**secret, "password": REDACTED})
    for i in range(80):  # wide key sets (2,000 keys): cleared by cost long before 4,096 entries
        keys = tuple(f"{i:03d}{j:07d}" for j in range(2000))
        assert s.prepare(dict.fromkeys(keys, 1)) == orjson.dumps(dict.fromkeys(keys, 1))
        assert keys in c.keyset_cache
        assert c.keyset_cache_cost[0] == sum(sanitise._keyset_cost(k) for k in c.keyset_cache)
        assert c.keyset_cache_cost[0] <= sanitise._KEYSET_CACHE_BUDGET
    assert len(c.keyset_cache) < 60
