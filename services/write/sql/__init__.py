"""The write side's SQL, one module per family of tables. Each function runs inside a
transaction its caller (`services.write`) opened, and reads rows by column name."""

from __future__ import annotations

from typing import Any


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched."""
    return int(result.rowcount)
