"""The write side's SQL, one module per family of tables. Each function runs inside a
transaction its caller (`services.write`) opened, and reads rows by column name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched."""
    return int(result.rowcount)


def rows_json(columns: str, rows: Iterable[Sequence[Any]]) -> str:
    """A batch's rows as one JSON document, an array of objects keyed by `columns` (names
    separated by spaces), for `json_to_recordset(CAST(:rows AS json)) AS r(<column> <type>, ...)`.

    One text parameter instead of an array per column: asyncpg encodes an array element by
    element, and PostgreSQL parses it so; one document is one bind and one parse. A value that
    is JSON already (an `orjson.Fragment`) goes in as it is, for a `json` or `jsonb` column."""
    names = columns.split()
    return orjson.dumps([dict(zip(names, row, strict=True)) for row in rows]).decode()
