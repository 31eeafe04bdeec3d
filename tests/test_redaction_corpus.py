"""The redaction corpus (issue 14): every secret shape is redacted as a key, a nested
value, an array item and in free text, with and without the C accelerator; every
look-alike is stored byte for byte; markers name the rule and carry no part of the
secret; redaction is idempotent (a handler that pre-sanitises, then ingest, store the
same bytes); and, by property, an event without a secret is never changed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import sanitise
from pipeline.sanitise import BUILTIN_RULES, DEFAULT_SANITISER, Sanitiser
from tests.redaction_corpus import (
    LOOKALIKE_KEYS,
    LOOKALIKE_PHRASES,
    LOOKALIKES,
    SECRETS,
    Secret,
    lookalike_placements,
)

S = DEFAULT_SANITISER
MARKER = rb"\[REDACTED:([a-z0-9-]+)\]"


def test_corpus_size() -> None:
    assert len(SECRETS) >= 100 and len(LOOKALIKES) + len(LOOKALIKE_KEYS) >= 100
    categories = {s.category for s in SECRETS}
    assert categories >= {"github", "gitlab", "slack", "stripe", "google", "azure", "npm", "pypi", "aws", "jwt",
                          "pem", "url", "bearer", "card", "key-name"}


def _cases() -> list[tuple[str, Secret, str, dict[str, Any]]]:
    return [(f"{i}-{s.category}-{where}", s, where, ev) for i, s in enumerate(SECRETS) for where, ev in s.placements()]


CASES = _cases()


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_every_secret_in_every_placement_is_redacted(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not native:
        monkeypatch.setattr(sanitise, "_native", None)
    sanitiser = Sanitiser()
    missed = []
    for case_id, secret, _where, event in CASES:
        for _ in range(2):  # the second time the key-set verdicts are cached (the C path may answer)
            out = sanitiser.prepare(event)
            if secret.sensitive.encode() in out or b"[REDACTED:" not in out:
                missed.append(case_id)
                break
            assert sanitiser.prepare(orjson.loads(out)) == out, case_id  # idempotent
    assert not missed, f"{len(missed)} of {len(CASES)} not redacted: {missed[:20]}"


@pytest.mark.parametrize("value", [4111111111111111, 4111111111111111.0, -4111111111111111, 5555555555554444,
                                   378282246310005, 6011111111111117.0])
def test_cards_as_numbers(value: int | float) -> None:
    for event in ({"pan": value}, {"a": {"b": [value]}}):
        out = S.prepare(event)
        assert str(abs(int(value))).encode() not in out and b"[REDACTED:card-number]" in out


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_lookalikes_are_stored_unchanged(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not native:
        monkeypatch.setattr(sanitise, "_native", None)
    sanitiser = Sanitiser()
    changed = []
    for value in LOOKALIKES:
        for where, event in lookalike_placements(value):
            if sanitiser.prepare(event) != orjson.dumps(event):
                changed.append((where, value))
    for key in LOOKALIKE_KEYS:
        for event in ({key: "v-1"}, {"a": {key: 7}}, {"items": [{key: "x"}]}, {"msg": f"{key}=v-1"}):
            if sanitiser.prepare(event) != orjson.dumps(event):
                changed.append(("key", key))
    assert not changed, changed


def test_markers_name_the_rule_and_hide_the_secret() -> None:
    import hashlib
    import re

    seen: set[str] = set()
    for _case_id, secret, _where, event in CASES:
        out = S.prepare(event)
        seen.update(m.decode() for m in re.findall(MARKER, out))
        s = secret.sensitive.encode()
        assert hashlib.sha256(s).hexdigest().encode() not in out
        if len(s) >= 12:
            assert s[-8:] not in out  # not even a suffix
    assert seen <= set(BUILTIN_RULES)
    assert seen >= set(BUILTIN_RULES) - {"bearer-credential"}  # bearer tokens: also caught as kv-secret


def test_counts_per_rule() -> None:
    s = Sanitiser()
    s.prepare({"password": "x", "msg": "password=y and ghp_" + "a" * 36})
    assert s.counts.snapshot() == {"secret-key": 1, "kv-secret": 1, "github-token": 1}
    s.explain({"password": "x"})  # a dry run does not count
    assert s.counts.snapshot()["secret-key"] == 1


# --- property: an event without a secret is never changed -----------------------------------

atoms = st.sampled_from(LOOKALIKES) | st.integers(min_value=-(10**11), max_value=10**11).map(str) \
    | st.sampled_from(["alice", "bob", "ok", "denied", "GET", "/api/v1/pods", "10.0.0.1", "kube-system"])
benign_text = st.lists(atoms, min_size=1, max_size=4).map(" | ".join)
kv_text = st.tuples(st.sampled_from([*LOOKALIKE_KEYS, "user", "status", "mode"]), st.sampled_from(["=", ": "]),
                    atoms).map("".join)
leaf = (st.none() | st.booleans() | st.integers(min_value=-(10**11), max_value=10**11)
        | st.floats(allow_nan=False, allow_infinity=False, max_value=1e11, min_value=-1e11)
        | benign_text | kv_text)
keys = st.sampled_from(LOOKALIKE_KEYS + ["user", "action", "ip", "detail", "rows", "ts"]
                       + [x for x in LOOKALIKES if x not in LOOKALIKE_PHRASES])
benign_events = st.dictionaries(keys, st.recursive(
    leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3), max_leaves=10), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=benign_events)
def test_property_events_without_secrets_are_unchanged(event: dict[str, Any]) -> None:
    assert S.prepare(event) == orjson.dumps(event)
    assert S.prepare_many([event]) == [orjson.dumps(event)]
    assert S.prepare_json_many([orjson.dumps(event)]) == [orjson.dumps(event)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=benign_events, secret=st.sampled_from(SECRETS), where=st.sampled_from(["text", "nested", "array"]))
def test_property_a_planted_secret_is_removed_and_nothing_else_changes(event: dict[str, Any], secret: Secret,
                                                                      where: str) -> None:
    planted = dict(event)
    planted["__planted"] = dict(secret.placements())[where]
    out = orjson.loads(S.prepare(planted))
    assert secret.sensitive not in orjson.dumps(out).decode()
    del out["__planted"]
    assert out == orjson.loads(orjson.dumps(event))
