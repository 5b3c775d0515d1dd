"""The services' strict JSON (services.common.strict_json): what it refuses, and what it leaves
for validation to name."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest.mock import Mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common import strict_json
from services.common.strict_json import parse_json, strict_loads
from shared.events import ActivityEvent, BadNumber, validate_event
from tests.unit.test_records import ANY_TEXT, Number


class Pairs(list[tuple[str, Any]]):
    """An object as the pairs it is written with."""


def write(value: Any, compact: bool, ascii_only: bool) -> str:
    comma, colon = (",", ":") if compact else (", ", ": ")
    if isinstance(value, Pairs):
        pairs = (write(name, compact, ascii_only) + colon + write(item, compact, ascii_only) for name, item in value)
        return "{" + comma.join(pairs) + "}"
    if isinstance(value, list):
        return "[" + comma.join(write(item, compact, ascii_only) for item in value) + "]"
    return value if isinstance(value, Number) else json.dumps(value, ensure_ascii=ascii_only)


@pytest.mark.parametrize("body", [b"NaN", b'{"a": Infinity}', b"[-Infinity]"])
def test_parse_json_refuses_nan_and_infinity(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


@pytest.mark.parametrize(
    "number",
    [
        "1e400",
        "-1e400",
        "1e-1001",
        "0e-99999",
        "1." + "0" * 1001,
        "9" * 5000,
        "10e999999999999999999",
        "1e-999999999999999999",
    ],
)
def test_parse_json_leaves_numbers_no_double_or_jsonb_holds_for_validation_to_name(number: str) -> None:
    assert isinstance(parse_json(f'{{"a": {number}}}'.encode())["a"], BadNumber)


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1, "a": 2}', b'{"a": {"b": "\\u0000", "b": ""}}'],
    ids=["top", "nested-hiding-a-nul"],
)
def test_parse_json_refuses_a_name_twice_in_one_object(body: bytes) -> None:
    with pytest.raises(ValueError, match="appears twice"):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    ['{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32-le"), b"\xef\xbb\xbf{}", b'{"a": "\xed\xa0\x80"}'],
    ids=["utf-16", "utf-32", "bom", "encoded-surrogate"],
)
def test_parse_json_reads_only_utf_8_without_a_bom(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


def test_parse_json_refuses_nesting_too_deep_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)


# --- orjson reads what it can vouch for; the answer is always the strict parser's ---

KEYS = st.sampled_from(["a", "b", "é", "k:", 'q"', "\\", "\x00", "\ud800", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**400]),
    st.floats(),
    st.sampled_from(["1e400", "1e-1001", "0e-99999", "1." + "0" * 1001, "-0", "1E+2", "1e-7", "0.1"]).map(Number),
    ANY_TEXT,
)
# An object is written from a list of pairs, so a name may be given twice.
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.lists(st.tuples(KEYS | ANY_TEXT, inner), max_size=4).map(Pairs),
    max_leaves=12,
)
BYTES = st.sampled_from([b'"', b"\\", b"{", b"[", b"]", b":", b",", b" ", b"\x00", b"\xff", b"\xed", b"0", b"e", b"."])


def python(value: Any) -> Any:
    """The value as Python holds it: a name given twice keeps its last value."""
    if isinstance(value, Pairs):
        return {name: python(item) for name, item in value}
    if isinstance(value, list):
        return [python(item) for item in value]
    return json.loads(value) if isinstance(value, Number) else value


def outcome(parse: Callable[[bytes], Any], body: bytes) -> object:
    """What a parser answers, comparable: values with their types, or the error and its message."""
    try:
        return shape(parse(body))
    except ValueError as exc:
        return type(exc).__name__, str(exc)


def shape(value: Any) -> object:
    if isinstance(value, dict):
        return "dict", [(name, shape(item)) for name, item in value.items()]
    if isinstance(value, list):
        return "list", [shape(item) for item in value]
    if isinstance(value, BadNumber):
        return "BadNumber", value.text
    return type(value).__name__, repr(value)  # repr tells 0.0 from -0.0


def assert_same(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(strict_loads, body)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.booleans(), st.booleans())
def test_any_json_text_reads_as_the_strict_parser_reads_it(value: Any, compact: bool, ascii_only: bool) -> None:
    assert_same(write(value, compact, ascii_only).encode(errors="surrogatepass"))


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.data())
def test_any_text_orjson_writes_and_any_change_of_it_read_as_the_strict_parser_reads_them(
    value: Any, data: st.DataObject
) -> None:
    try:
        body = orjson.dumps(python(value))
    except orjson.JSONEncodeError:
        return  # a lone surrogate, or an integer past 64 bits
    assert_same(body)
    at = data.draw(st.integers(0, len(body)))
    assert_same(body[:at] + data.draw(BYTES) + body[at + data.draw(st.integers(0, 1)) :])


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"b":"x","b":"x"}}',
        b'[{"":1,"":1}]',
        b'{"a":18446744073709551616}',
        b'{"a":-9223372036854775809}',
        b'{"a":1.' + b"0" * 1001 + b"}",
        b'{"a":1e400}',
        b'{"a":-0}',
        b'{"a":1.0}',
        b'{"a":5e-324}',
        b'{"a":"\\u0000"}',
        b'{"a":"\\ud800"}',
        b"\xef\xbb\xbf{}",
        b"[" * 64 + b"]" * 64,
        b"[" * 65 + b"]" * 65,
        b"[" * 1000 + b"]" * 1000,
        b"",
    ],
)
def test_where_orjson_and_the_strict_parser_could_differ_the_answer_is_the_strict_parsers(body: bytes) -> None:
    assert_same(body)


def test_records_as_ingest_publishes_them_are_read_without_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = validate_event(
        {"event_id": "e-1", "type": "post", "member_id": "ann", "occurred_at": "2026-11-20T09:00:00.5+01:00"}
        | {"content_id": 'café "☕" \\', "attributes": {"n": [1, 0.1, 1e-7, None, True], "s": "\x7f\u2028"}}
    )
    assert isinstance(event, ActivityEvent)
    body = event.to_json()
    expected = strict_loads(body)
    monkeypatch.setattr(strict_json, "strict_loads", Mock(side_effect=AssertionError("read by the standard library")))
    assert shape(parse_json(body)) == shape(expected)
