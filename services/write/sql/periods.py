"""`member_periods`: each member's points per tier in each week, month and year."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.members import Periods
from services.write.sql import rowcount


async def add_period_points(conn: AsyncConnection, deltas: Periods) -> Periods:
    """Add to members' points per tier and period; returns the new totals of those touched."""
    rows = sorted((m, tier, period, n) for m, by in deltas.items() for (tier, period), n in by.items())
    if not rows:
        return {}
    result = await conn.execute(
        text(
            """
            INSERT INTO member_periods AS p (member_id, tier, period, points)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:tiers AS text[]), CAST(:periods AS text[]),
                                 CAST(:deltas AS bigint[]))
            ON CONFLICT (member_id, tier, period) DO UPDATE SET points = p.points + excluded.points
            RETURNING member_id, tier, period, points
            """
        ),
        {
            "ids": [r[0] for r in rows],
            "tiers": [r[1] for r in rows],
            "periods": [r[2] for r in rows],
            "deltas": [r[3] for r in rows],
        },
    )
    out: Periods = {}
    for row in result:
        out.setdefault(row.member_id, {})[(row.tier, row.period)] = row.points
    return out


async def period_points(conn: AsyncConnection, member_ids: list[str], periods: list[str]) -> Periods:
    """Members' points in these periods (for rebuilding the leaderboards in Redis)."""
    result = await conn.execute(
        text(
            "SELECT member_id, tier, period, points FROM member_periods"
            " WHERE member_id = ANY(CAST(:ids AS text[])) AND period = ANY(CAST(:periods AS text[]))"
        ),
        {"ids": member_ids, "periods": periods},
    )
    out: Periods = {}
    for row in result:
        out.setdefault(row.member_id, {})[(row.tier, row.period)] = row.points
    return out


async def replace_period_points(conn: AsyncConnection, points: Periods) -> Periods:
    """Set members' points per tier and period to exactly these; returns them, with a 0 for
    each period they no longer have points in."""
    ids = sorted(points)
    dropped = await conn.execute(
        text(
            "DELETE FROM member_periods WHERE member_id = ANY(CAST(:ids AS text[])) RETURNING member_id, tier, period"
        ),
        {"ids": ids},
    )
    out: Periods = {m: {} for m in ids}
    for row in dropped:
        out[row.member_id][(row.tier, row.period)] = 0
    for member, by in points.items():
        out[member].update(by)
    await add_period_points(conn, points)  # nothing left to add to: it inserts them
    return out


async def prune_periods(conn: AsyncConnection, oldest: dict[str, str], limit: int) -> int:
    """Delete up to `limit` rows of weeks, months and years older than the oldest kept of each
    kind (as `shared.scoring.oldest_kept` names them), found through the period index (in byte
    order, as the names sort); rows a commit holds are left for a later round. Returns how
    many were deleted."""
    result = await conn.execute(
        text(
            """
            DELETE FROM member_periods AS p USING (
                SELECT member_id, tier, period FROM member_periods
                WHERE period COLLATE "C" >= 'week:' AND period COLLATE "C" < :week
                   OR period COLLATE "C" >= 'month:' AND period COLLATE "C" < :month
                   OR period COLLATE "C" >= 'year:' AND period COLLATE "C" < :year
                LIMIT :limit FOR UPDATE SKIP LOCKED
            ) AS x
            WHERE p.member_id = x.member_id AND p.tier = x.tier AND p.period = x.period
            """
        ),
        {"week": oldest["week"], "month": oldest["month"], "year": oldest["year"], "limit": limit},
    )
    return rowcount(result)
