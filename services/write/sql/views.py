"""`pending_views` (the members each commit changed, until their views are in Redis) and
`view_sync` (the epoch that tells a restored PostgreSQL)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def add_pending_views(conn: AsyncConnection, member_ids: list[str], written: list[int]) -> int:
    """Note that these members' views are to be written to Redis (one row for the commit), and
    delete the rows whose views have been written; returns the new row's id."""
    row = await conn.execute(
        text(
            """
            WITH written AS (DELETE FROM pending_views WHERE id = ANY(CAST(:written AS bigint[])))
            INSERT INTO pending_views (member_ids) VALUES (CAST(:ids AS text[])) RETURNING id
            """
        ),
        {"ids": member_ids, "written": written},
    )
    return int(row.scalar_one())


class Pending(NamedTuple):
    id: int
    member_ids: list[str]


async def left_pending_views(conn: AsyncConnection, written: list[int], grace_s: float, limit: int) -> list[Pending]:
    """Delete the rows whose views have been written; lock and return those older than the
    grace (left behind by a failed write or a crash), skipping any another scorer holds."""
    rows = await conn.execute(
        text(
            """
            WITH written AS (DELETE FROM pending_views WHERE id = ANY(CAST(:written AS bigint[])))
            SELECT id, member_ids FROM pending_views
            WHERE recorded_at < now() - make_interval(secs => :grace) AND id <> ALL(CAST(:written AS bigint[]))
            ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
            """
        ),
        {"written": written, "grace": grace_s, "limit": limit},
    )
    return [Pending(row.id, list(row.member_ids)) for row in rows]


async def drop_pending_views(conn: AsyncConnection, ids: list[int]) -> None:
    if ids:
        await conn.execute(text("DELETE FROM pending_views WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": ids})


async def unpend_member(conn: AsyncConnection, member_id: str) -> None:
    """Take the member out of the pending view rows."""
    await conn.execute(
        text(
            "UPDATE pending_views SET member_ids = array_remove(member_ids, CAST(:id AS text))"
            " WHERE CAST(:id AS text) = ANY(member_ids)"
        ),
        {"id": member_id},
    )


async def next_view_epoch(conn: AsyncConnection) -> int:
    """The next view epoch; its row stays locked until the transaction ends, so scorers take turns."""
    row = await conn.execute(text("UPDATE view_sync SET epoch = epoch + 1 RETURNING epoch"))
    return int(row.scalar_one())
