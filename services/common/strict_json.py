"""Strict JSON for untrusted bytes: request bodies in ingest, activity records in the scorer.

Strict as RFC 8259 is, and then some, so that what it returns PostgreSQL's jsonb stores as it
was sent: UTF-8 without a byte order mark, no NaN or Infinity, no name twice in one object,
and a ValueError rather than a RecursionError when nested too deeply. A number no double can
hold is left as a BadNumber for validation to name the field it is in.

Records as ingest publishes them are read by orjson, about four times faster than the standard
library with the hooks that make it strict; the standard library reads every body orjson cannot
vouch for. Either way the answer is the same (tests/unit/test_strict_json.py holds them to it).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from shared.events import MAX_DECIMAL_PLACES, BadNumber

# More than a body that validates nests (attributes nest at most 32 levels), and far fewer than
# the standard library's parser (about 1,000 levels, less the caller's own depth) or orjson's
# writer (254) can nest.
_VOUCHED_BRACKETS = 64


def parse_json(body: bytes) -> Any:
    """The JSON value of `body`, or a ValueError saying why it is not JSON this system reads
    (UnicodeDecodeError when it is not UTF-8): what strict_loads answers, most often faster.

    orjson reads JSON as RFC 8259 says, and refuses what the strict parser refuses of the text
    itself: a byte order mark, NaN and Infinity, control characters in strings, bytes that are
    not UTF-8, lone surrogates. Its reading still differs in four ways: it keeps the last of a
    name given twice, makes a float of an integer past 64 bits, reads as a double a number with
    over 1,000 decimal places (a BadNumber to the strict parser), and nests deeper than the
    standard library can. In the first three, writing its value back never gives the body
    again (a pair is missing; the integer comes back as a float; a double takes at most 17
    digits), and the fourth needs many brackets. So a body with few brackets that orjson writes
    back byte for byte, both parsers read alike; records as ingest publishes them are such."""
    if body.count(b"{") + body.count(b"[") <= _VOUCHED_BRACKETS:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # strict_loads says why
        else:
            if orjson.dumps(value) == body:
                return value
    return strict_loads(body)


def strict_loads(body: bytes) -> Any:
    """The reference reading of `body`, with the standard library: parse_json's answer, slower."""
    try:
        return json.loads(
            body.decode(),  # bytes given to json.loads may be read as UTF-16 or -32, or with a BOM
            parse_constant=_refuse_constant,
            parse_float=_float,
            parse_int=_int,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _float(text: str) -> float | BadNumber:
    number = float(text)
    try:
        exponent = Decimal(text).as_tuple().exponent
    except InvalidOperation:  # an exponent past what Decimal holds: 1e-999999999999999999
        return BadNumber(text)
    if not math.isfinite(number) or (isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES):
        return BadNumber(text)
    return number


def _int(text: str) -> int | BadNumber:
    try:
        return int(text)
    except ValueError:  # past Python's limit on digits (4,300 by default)
        return BadNumber(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Refused, not "the last one wins": jsonb would still read the value a duplicate hides.
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"the name {json.dumps(name)} appears twice in one object")
        out[name] = value
    return out
