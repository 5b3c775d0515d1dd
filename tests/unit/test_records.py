"""decode_record is total: for any bytes it returns an ActivityRecord or raises RecordError, whose
message encodes (it travels as a Kafka header). The scorer dead-letters a RecordError; any
other exception would stop it on that record."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scorer.records import RecordError, decode_record
from shared.events import ActivityRecord

# Every code point, lone surrogates included: json.dumps writes them as \\ud800 escapes.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)


class Number(str):
    """A number literal written into the JSON text as it is (json.dumps cannot write these)."""


NUMBERS = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1e400", "-1e400", "1e-1001", "0e-99999", "9" * 5000, "1." + "0" * 1001, "-0", "1E+2"]).map(
        Number
    ),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, ANY_TEXT)


def to_json(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(to_json, value)) + "]"
    return value if isinstance(value, Number) else json.dumps(value)


JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=20
)
FIELDS = ["event_id", "type", "member_id", "occurred_at", "content_id", "target_member_id", "duration_s", "attributes"]
VALID: dict[str, Any] = {
    "event_id": "e-1",
    "type": "like",
    "member_id": "ann",
    "occurred_at": "2026-11-20T09:00:00Z",
    "content_id": "p-1",
    "target_member_id": "bob",
}
TIMESTAMPS = st.sampled_from(
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-02-30T00:00:00Z", "2026-11-20T23:59:60Z"]
) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())


@st.composite
def event_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid like with some fields replaced, dropped or added: near misses reach deep."""
    raw = dict(VALID)
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            raw.pop(field, None)
        elif field == "occurred_at" and choice == 1:
            raw[field] = draw(TIMESTAMPS)
        elif field == "type" and choice == 1:
            raw[field] = draw(st.sampled_from(["like", "post", "visit", "member_joined", "upvote"]))
        else:
            raw[field] = draw(JSON)
    if draw(st.booleans()):
        raw["attributes"] = draw(st.dictionaries(ANY_TEXT, JSON, max_size=4))
    return raw


def assert_total(key: bytes | None, value: bytes | None) -> ActivityRecord | None:
    try:
        return decode_record(key, value)
    except RecordError as exc:
        str(exc).encode()
        return None


@settings(max_examples=500)
@given(st.one_of(st.none(), st.binary()), st.one_of(st.none(), st.binary()))
def test_any_bytes_decode_or_raise_record_error(key: bytes | None, value: bytes | None) -> None:
    assert_total(key, value)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_any_json_decodes_or_raises_record_error(value: Any) -> None:
    assert_total(b"ann", to_json(value).encode())


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(event_like(), st.sampled_from([b"ann", b"bob", b"\xff", None]))
def test_any_near_miss_of_an_event_decodes_or_raises_record_error(raw: dict[str, Any], key: bytes | None) -> None:
    record = assert_total(key, to_json(raw).encode())
    if record is not None:
        assert record.subject in record.event.subjects()


def test_nesting_deeper_than_python_recurses_is_a_record_error() -> None:
    assert assert_total(b"ann", b'{"attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") is None
