"""All of the API's SQL: read-only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.views import MemberView


async def member_views(conn: AsyncConnection, member_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Members' stored views, as Redis holds them (`MemberView.stored`)."""
    rows = await conn.execute(
        text(
            "SELECT member_id, level_id, active_score, passive_score, points, joined_at, updated_at, version,"
            " pinned_reason, pinned_until FROM members WHERE member_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": member_ids},
    )
    return {row.member_id: MemberView.of_row(row._asdict()).stored() for row in rows}


async def level_changes(conn: AsyncConnection, member_id: str, before_seq: int | None, limit: int) -> list[str]:
    """A member's level-change payloads, newest first, starting below `before_seq`."""
    rows = await conn.execute(
        text(
            "SELECT payload FROM level_changes WHERE member_id = :member_id AND seq < :before"
            " AND payload IS NOT NULL"  # not a tombstone waiting for the relay
            " ORDER BY seq DESC LIMIT :limit"
        ),
        {"member_id": member_id, "before": before_seq if before_seq is not None else 2**31 - 1, "limit": limit},
    )
    return [row[0] for row in rows]


async def stats(conn: AsyncConnection) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Members per level id, and per counted thing its totals over the last 24 and 168 hours
    (this hour included). A few dozen rows, whatever the number of members."""
    levels = await conn.execute(text("SELECT level_id, members FROM level_counts"))
    hours = await conn.execute(
        text(
            """
            SELECT what, coalesce(sum(n) FILTER (WHERE hour > date_trunc('hour', now()) - interval '24 hours'), 0),
                   sum(n)
            FROM hourly_counts WHERE hour > date_trunc('hour', now()) - interval '168 hours' GROUP BY what
            """
        )
    )
    return {row[0]: row[1] for row in levels}, {row[0]: (int(row[1]), int(row[2])) for row in hours}


async def ping(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT 1"))


async def rules_in_force(conn: AsyncConnection) -> tuple[str, str] | None:
    """The version of the rules in force and its rules file, if any is recorded."""
    row = await conn.execute(
        text("SELECT r.version, r.body FROM rules_in_force AS f JOIN rules AS r USING (version) WHERE f.id = 1")
    )
    found = row.first()
    return (found[0], found[1]) if found else None


async def rules_bodies(conn: AsyncConnection) -> list[str]:
    """Every rules file the system has run under, the first recorded first."""
    return list((await conn.execute(text("SELECT body FROM rules ORDER BY recorded_at, version"))).scalars())
