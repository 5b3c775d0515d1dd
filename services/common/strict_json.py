"""Strict JSON for untrusted bytes: request bodies in ingest, activity records in the scorer.

Strict as RFC 8259 is, and then some, so that what it returns PostgreSQL's jsonb stores as it
was sent: UTF-8 without a byte order mark, no NaN or Infinity, no name twice in one object,
and a ValueError rather than a RecursionError when nested too deeply. A number no double can
hold is left as a BadNumber for validation to name the field it is in.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from shared.events import MAX_DECIMAL_PLACES, BadNumber


def parse_json(body: bytes) -> Any:
    """The JSON value of `body`, or a ValueError saying why it is not JSON this system reads
    (UnicodeDecodeError when it is not UTF-8)."""
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
    exponent = Decimal(text).as_tuple().exponent
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
