"""`pin_audit`: who pinned, released or let expire a member's level, when and why (SPEC §9.3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class PinAudit:
    """One line of the pin audit log."""

    member_id: str
    action: str  # pin, unpin, expire
    level_id: str | None  # the level pinned, or released
    reason: str | None
    until: datetime | None
    operator: str
    at: datetime


async def record_pin_audit(conn: AsyncConnection, entries: list[PinAudit]) -> None:
    if not entries:
        return
    await conn.execute(
        text(
            """
            INSERT INTO pin_audit (member_id, action, level_id, reason, until, operator, at)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:actions AS text[]), CAST(:levels AS text[]),
                                 CAST(:reasons AS text[]), CAST(:untils AS timestamptz[]),
                                 CAST(:operators AS text[]), CAST(:ats AS timestamptz[]))
            """
        ),
        {
            "ids": [e.member_id for e in entries],
            "actions": [e.action for e in entries],
            "levels": [e.level_id for e in entries],
            "reasons": [e.reason for e in entries],
            "untils": [e.until for e in entries],
            "operators": [e.operator for e in entries],
            "ats": [e.at for e in entries],
        },
    )
