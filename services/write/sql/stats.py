"""`level_counts` and `hourly_counts`: the figures `GET /v1/stats` reads, kept by the
transactions that change them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def count(conn: AsyncConnection, levels: dict[str, int], hourly: dict[str, int], now: datetime) -> None:
    """Add to the members per level (by id) and to this hour's counts (by what)."""
    levels = {level: n for level, n in levels.items() if n}
    if levels:
        await conn.execute(
            text(
                """
                INSERT INTO level_counts AS c (level_id, members)
                SELECT * FROM unnest(CAST(:levels AS text[]), CAST(:deltas AS bigint[]))
                ON CONFLICT (level_id) DO UPDATE SET members = c.members + excluded.members
                """
            ),
            {"levels": sorted(levels), "deltas": [levels[lv] for lv in sorted(levels)]},
        )
    hourly = {what: n for what, n in hourly.items() if n}
    if hourly:
        await conn.execute(
            text(
                """
                INSERT INTO hourly_counts AS c (hour, what, n)
                SELECT date_trunc('hour', CAST(:now AS timestamptz)), w, d
                FROM unnest(CAST(:whats AS text[]), CAST(:deltas AS bigint[])) AS u(w, d)
                ON CONFLICT (hour, what) DO UPDATE SET n = c.n + excluded.n
                """
            ),
            {"now": now, "whats": sorted(hourly), "deltas": [hourly[w] for w in sorted(hourly)]},
        )
