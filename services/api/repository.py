"""All of the API's SQL: read-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.members import ranked
from shared.views import MemberView


async def member_views(conn: AsyncConnection, member_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Members' stored views, as Redis holds them (`MemberView.stored`)."""
    rows = await conn.execute(
        text(
            "SELECT member_id, level_id, active_score, passive_score, points, joined_at, updated_at, version,"
            " pinned_reason, pinned_until, programs, badges FROM members WHERE member_id = ANY(CAST(:ids AS text[]))"
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


# A board of a past period, in the order of `ix_member_periods_board` (points down, then member
# id in byte order, as Redis orders ties), without the members left out.
_ON_BOARD = (
    'tier = :board AND period COLLATE "C" = :period AND points > 0 AND NOT (member_id = ANY(CAST(:excluded AS text[])))'
)


async def period_board(
    conn: AsyncConnection, board: str, period: str, offset: int, limit: int, excluded: list[str]
) -> list[tuple[str, int, int]]:
    """A page of a past period's board, (member, points, rank) each: an index range read from
    the offset, and the members tied with the first before it (an index range too), since the
    members with more points are the others before it."""
    at = {"board": board, "period": period, "excluded": excluded}
    rows = await conn.execute(
        text(
            f"SELECT member_id, points FROM member_periods WHERE {_ON_BOARD}"
            ' ORDER BY points DESC, member_id COLLATE "C" LIMIT :limit OFFSET :offset'
        ),
        at | {"limit": limit, "offset": offset},
    )
    page = [(row.member_id, int(row.points)) for row in rows]
    if not page:
        return []
    tied = await conn.execute(
        text(
            f"SELECT count(*) FROM member_periods WHERE {_ON_BOARD}"
            ' AND points = :points AND member_id COLLATE "C" < :member_id'
        ),
        at | {"points": page[0][1], "member_id": page[0][0]},
    )
    return ranked(page, offset, offset - tied.scalar_one())


async def period_board_size(conn: AsyncConnection, board: str, period: str, excluded: list[str]) -> int:
    """How many members a past period's board lists (an index-only count of the whole board)."""
    found = await conn.execute(
        text(f"SELECT count(*) FROM member_periods WHERE {_ON_BOARD}"),
        {"board": board, "period": period, "excluded": excluded},
    )
    return int(found.scalar_one())


async def period_place(
    conn: AsyncConnection, board: str, period: str, member_id: str, excluded: list[str]
) -> tuple[int | None, int]:
    """A member's rank and points on a past period's board; no rank without points, nor for a member left out."""
    points = (
        await conn.execute(
            text(
                "SELECT points FROM member_periods WHERE member_id = :member_id AND tier = :board AND period = :period"
            ),
            {"member_id": member_id, "board": board, "period": period},
        )
    ).scalar()
    if not points or points < 0:
        return None, 0
    if member_id in excluded:
        return None, int(points)
    above = (
        await conn.execute(
            text(f"SELECT count(*) FROM member_periods WHERE {_ON_BOARD} AND points > :points"),
            {"board": board, "period": period, "excluded": excluded, "points": points},
        )
    ).scalar_one()
    return above + 1, int(points)


async def pinned_members(conn: AsyncConnection) -> list[str]:
    """The members whose level is pinned (staff, say): `exclude=pinned` leaves them off the boards."""
    rows = await conn.execute(text("SELECT member_id FROM members WHERE pinned_level IS NOT NULL"))
    return list(rows.scalars())


async def level_holders(
    conn: AsyncConnection, level_id: str, tier: str, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the members at a level, by their score of its tier (down, then member id), and
    how many hold it (`level_counts`, kept with the members)."""
    score = {"active": "active_score", "passive": "passive_score"}[tier]
    rows = await conn.execute(
        text(
            "SELECT member_id, active_score, passive_score, joined_at FROM members WHERE level_id = :level_id"
            f' ORDER BY {score} DESC, member_id COLLATE "C" LIMIT :limit OFFSET :offset'
        ),
        {"level_id": level_id, "limit": limit, "offset": offset},
    )
    total = await conn.execute(text("SELECT members FROM level_counts WHERE level_id = :id"), {"id": level_id})
    return [row._asdict() for row in rows], int(total.scalar() or 0)


async def within_reach(
    conn: AsyncConnection, below: str, needs: dict[str, int], now: datetime, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the members at level `below` whose level is not pinned, by what they still
    need of `needs` (the next level's requirements): points first (both scores' shortfalls
    summed), then whole days as a member, then member id; and how many there are."""
    at = {"below": below, "now": now, "offset": offset, "limit": limit}
    at |= {f"need_{k}": needs.get(k, 0) for k in ("active_score", "passive_score", "tenure_days")}
    rows = await conn.execute(
        text(
            """
            SELECT member_id, active_score, passive_score, joined_at FROM members
            WHERE level_id = :below AND pinned_level IS NULL
            ORDER BY greatest(0, :need_active_score - active_score)
                     + greatest(0, :need_passive_score - passive_score),
                     greatest(0, :need_tenure_days
                                 - floor(extract(epoch FROM CAST(:now AS timestamptz) - joined_at) / 86400)),
                     member_id COLLATE "C"
            LIMIT :limit OFFSET :offset
            """
        ),
        at,
    )
    total = await conn.execute(
        text("SELECT count(*) FROM members WHERE level_id = :below AND pinned_level IS NULL"), {"below": below}
    )
    return [row._asdict() for row in rows], int(total.scalar_one())


async def promotions(conn: AsyncConnection) -> dict[str, int]:
    """Promotions into each level (by id) over the last 30 days (720 whole hours, this one included)."""
    rows = await conn.execute(
        text(
            "SELECT substr(what, 10), sum(n) FROM hourly_counts"
            " WHERE hour > date_trunc('hour', now()) - interval '720 hours'"
            " AND what COLLATE \"C\" >= 'promoted:' AND what COLLATE \"C\" < 'promoted;' GROUP BY what"
        )
    )
    return {row[0]: int(row[1]) for row in rows}


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


async def enrolled_counts(conn: AsyncConnection) -> dict[str, int]:
    """Members enrolled, by programme id."""
    rows = await conn.execute(text("SELECT program_id, count(*) FROM program_enrolments GROUP BY program_id"))
    return {row[0]: int(row[1]) for row in rows}


async def enrolled_among(conn: AsyncConnection, program_id: str, member_ids: list[str]) -> set[str]:
    """Which of these members are enrolled in the programme."""
    rows = await conn.execute(
        text(
            "SELECT member_id FROM program_enrolments WHERE program_id = :program"
            " AND member_id = ANY(CAST(:ids AS text[]))"
        ),
        {"program": program_id, "ids": member_ids},
    )
    return {row[0] for row in rows}


async def badge_holders(conn: AsyncConnection) -> dict[str, int]:
    """Members holding each badge, by badge id (`badge_counts`: one row a badge)."""
    rows = await conn.execute(text("SELECT badge_id, holders FROM badge_counts"))
    return {row[0]: int(row[1]) for row in rows}
