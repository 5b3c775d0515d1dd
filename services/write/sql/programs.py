"""`program_enrolments`, `program_audit` and `members.programs`: who is in which programme
(SPEC §11), who put them in or took them out, when and why."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def enrol(
    conn: AsyncConnection,
    member_id: str,
    program_id: str,
    intake: date,
    operator: str,
    reason: str | None,
    at: datetime,
) -> int:
    """Enrol a member (who is not enrolled) and audit it; returns the audit line's id."""
    await conn.execute(
        text(
            "INSERT INTO program_enrolments (member_id, program_id, intake, enrolled_at, operator)"
            " VALUES (:member, :program, :intake, :at, :operator)"
        ),
        {"member": member_id, "program": program_id, "intake": intake, "at": at, "operator": operator},
    )
    await conn.execute(
        text("UPDATE members SET programs = array_append(programs, CAST(:program AS text)) WHERE member_id = :member"),
        {"member": member_id, "program": program_id},
    )
    return await _audit(conn, member_id, program_id, "enroll", intake, operator, reason, at)


async def leave(
    conn: AsyncConnection, member_id: str, program_id: str, operator: str, reason: str | None, at: datetime
) -> tuple[int, date] | None:
    """Take a member out of a programme and audit it; returns the audit line's id and the
    intake the member had joined from, or None if the member was not enrolled."""
    row = await conn.execute(
        text("DELETE FROM program_enrolments WHERE member_id = :member AND program_id = :program RETURNING intake"),
        {"member": member_id, "program": program_id},
    )
    intake = row.scalar_one_or_none()
    if intake is None:
        return None
    await conn.execute(
        text("UPDATE members SET programs = array_remove(programs, CAST(:program AS text)) WHERE member_id = :member"),
        {"member": member_id, "program": program_id},
    )
    return await _audit(conn, member_id, program_id, "leave", intake, operator, reason, at), intake


async def _audit(
    conn: AsyncConnection,
    member_id: str,
    program_id: str,
    action: str,
    intake: date,
    operator: str,
    reason: str | None,
    at: datetime,
) -> int:
    row = await conn.execute(
        text(
            "INSERT INTO program_audit (member_id, program_id, action, intake, reason, operator, at)"
            " VALUES (:member, :program, :action, :intake, :reason, :operator, :at) RETURNING id"
        ),
        {
            "member": member_id,
            "program": program_id,
            "action": action,
            "intake": intake,
            "reason": reason,
            "operator": operator,
            "at": at,
        },
    )
    return int(row.scalar_one())
