"""`member_badges`, `badge_audit` and `badge_counts`: who was granted which badge (SPEC
§10.2), once; who granted or revoked one by hand, when and why; and how many hold each."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class Grant(NamedTuple):
    member_id: str
    badge_id: str
    granted_at: datetime
    cause: dict[str, Any]


async def grant(conn: AsyncConnection, grants: list[Grant]) -> set[tuple[str, str]]:
    """Grant badges no row names yet for the member: a badge is granted once, and one an
    operator revoked stays revoked. Returns the (member, badge) granted now."""
    if not grants:
        return set()
    ordered = sorted(grants, key=lambda g: (g.member_id, g.badge_id))  # in index order
    rows = await conn.execute(
        text(
            """
            INSERT INTO member_badges (member_id, badge_id, granted_at, cause)
            SELECT m, b, g, CAST(c AS jsonb)
            FROM unnest(CAST(:ids AS text[]), CAST(:badges AS text[]), CAST(:at AS timestamptz[]),
                        CAST(:causes AS text[])) AS u(m, b, g, c)
            ON CONFLICT (member_id, badge_id) DO NOTHING
            RETURNING member_id, badge_id
            """
        ),
        {
            "ids": [g.member_id for g in ordered],
            "badges": [g.badge_id for g in ordered],
            "at": [g.granted_at for g in ordered],
            "causes": [orjson.dumps(g.cause).decode() for g in ordered],
        },
    )
    return {(row.member_id, row.badge_id) for row in rows}


async def grant_again(
    conn: AsyncConnection, member_id: str, badge_id: str, cause: dict[str, Any], at: datetime
) -> bool:
    """An operator grants a badge the member does not hold: a new row, or a revoked one held
    again. False if the member holds it."""
    row = await conn.execute(
        text(
            """
            INSERT INTO member_badges AS mb (member_id, badge_id, granted_at, cause)
            VALUES (:member, :badge, :at, CAST(:cause AS jsonb))
            ON CONFLICT (member_id, badge_id) DO UPDATE
                SET granted_at = excluded.granted_at, cause = excluded.cause, revoked_at = NULL
                WHERE mb.revoked_at IS NOT NULL
            RETURNING badge_id
            """
        ),
        {"member": member_id, "badge": badge_id, "at": at, "cause": orjson.dumps(cause).decode()},
    )
    return row.scalar_one_or_none() is not None


async def revoke(conn: AsyncConnection, member_id: str, badge_id: str, at: datetime) -> datetime | None:
    """An operator revokes a badge the member holds (the row stays, revoked); returns when it
    had been granted, or None if the member did not hold it."""
    row = await conn.execute(
        text(
            "UPDATE member_badges SET revoked_at = :at WHERE member_id = :member AND badge_id = :badge"
            " AND revoked_at IS NULL RETURNING granted_at"
        ),
        {"member": member_id, "badge": badge_id, "at": at},
    )
    found: datetime | None = row.scalar_one_or_none()
    return found


async def drop(conn: AsyncConnection, member_ids: list[str], badge_ids: list[str]) -> None:
    """Delete these members' rows of badges the rules in force lack (a rescore under rules that
    dropped them): should the badge come back, it is earned anew."""
    await conn.execute(
        text(
            "DELETE FROM member_badges WHERE member_id = ANY(CAST(:ids AS text[]))"
            " AND NOT badge_id = ANY(CAST(:keep AS text[]))"
        ),
        {"ids": sorted(member_ids), "keep": badge_ids},
    )


async def audit(
    conn: AsyncConnection, member_id: str, badge_id: str, action: str, reason: str | None, operator: str, at: datetime
) -> None:
    await conn.execute(
        text(
            "INSERT INTO badge_audit (member_id, badge_id, action, reason, operator, at)"
            " VALUES (:member, :badge, :action, :reason, :operator, :at)"
        ),
        {"member": member_id, "badge": badge_id, "action": action, "reason": reason, "operator": operator, "at": at},
    )


async def count(conn: AsyncConnection, holders: dict[str, int]) -> None:
    """Add to the holders of each badge (written last in its transaction, like the stats)."""
    holders = {badge: n for badge, n in holders.items() if n}
    if not holders:
        return
    await conn.execute(
        text(
            """
            INSERT INTO badge_counts AS c (badge_id, holders)
            SELECT * FROM unnest(CAST(:badges AS text[]), CAST(:deltas AS bigint[]))
            ON CONFLICT (badge_id) DO UPDATE SET holders = c.holders + excluded.holders
            """
        ),
        {"badges": sorted(holders), "deltas": [holders[b] for b in sorted(holders)]},
    )
