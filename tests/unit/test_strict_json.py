"""The services' strict JSON (services.common.strict_json): what it refuses, and what it leaves
for validation to name."""

from __future__ import annotations

import pytest

from services.common.strict_json import parse_json
from shared.events import BadNumber


@pytest.mark.parametrize("body", [b"NaN", b'{"a": Infinity}', b"[-Infinity]"])
def test_parse_json_refuses_nan_and_infinity(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1e-1001", "0e-99999", "1." + "0" * 1001, "9" * 5000])
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
