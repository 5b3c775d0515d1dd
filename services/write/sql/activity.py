"""`activity`: every applied record, once per member and event id (the dedupe key), and the
history a rescore replays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def record_activity(
    conn: AsyncConnection, rows: list[tuple[str, str, str, int, int]], now: datetime
) -> set[tuple[str, str]]:
    """Keep each (member, event id, event JSON, partition, offset); return the keys not seen before."""
    if not rows:
        return set()
    members, event_ids, events, partitions, offsets = (list(col) for col in zip(*rows, strict=True))
    result = await conn.execute(
        text(
            """
            INSERT INTO activity (member_id, event_id, event, source_partition, source_offset, applied_at)
            SELECT m, e, CAST(v AS jsonb), p, o, :now
            FROM unnest(CAST(:members AS text[]), CAST(:event_ids AS text[]), CAST(:events AS text[]),
                        CAST(:partitions AS int[]), CAST(:offsets AS bigint[])) AS r(m, e, v, p, o)
            ON CONFLICT DO NOTHING
            RETURNING member_id, event_id
            """
        ),
        {
            "members": members,
            "event_ids": event_ids,
            "events": events,
            "partitions": partitions,
            "offsets": offsets,
            "now": now,
        },
    )
    return {(row.member_id, row.event_id) for row in result}


async def member_activity(
    conn: AsyncConnection, member_ids: list[str], skip: set[tuple[str, str]] | frozenset[tuple[str, str]]
) -> dict[str, str]:
    """Each of these members' applied records but `skip` (member, event id), in the order
    applied, as one JSON array of events (without their attributes, which are never scored)."""
    rows = await conn.execute(
        text(
            """
            SELECT member_id, json_agg(event - 'attributes' ORDER BY position)::text AS events FROM activity AS a
            WHERE member_id = ANY(CAST(:ids AS text[])) AND NOT EXISTS (
                SELECT 1 FROM unnest(CAST(:skip_ids AS text[]), CAST(:skip_events AS text[])) AS s(m, e)
                WHERE s.m = a.member_id AND s.e = a.event_id)
            GROUP BY member_id
            """
        ),
        {"ids": member_ids, "skip_ids": [m for m, _ in skip], "skip_events": [e for _, e in skip]},
    )
    return {row.member_id: row.events for row in rows}


class Replayable(NamedTuple):
    """A member's stored figures (None without a `members` row) beside its applied records."""

    member_id: str
    level_id: str | None
    active_score: int | None
    passive_score: int | None
    pinned_level: str | None
    events: str  # one JSON array, in the order applied, without attributes
    programs: tuple[str, ...] = ()  # the programmes the member is enrolled in
    badges: tuple[str, ...] = ()  # the badges the member holds
    revoked: tuple[str, ...] = ()  # badges an operator revoked: never granted again by a replay


# One row per member, in member id order: the stored figures beside the member's applied
# records as one JSON array in application order. The members' figures stream alongside their
# records (a merge join on the two primary keys), so memory does not grow with the members;
# attributes are never scored, so they are left in the database. Each array is read and
# validated in one call (pydantic-core parses the JSON): the events were validated on their
# way in, and the same models read them back.
_REPLAY = """
SELECT a.member_id, m.level_id, m.active_score, m.passive_score, m.pinned_level, a.events, m.programs,
       m.badges, ARRAY(SELECT badge_id FROM member_badges AS b
                       WHERE b.member_id = a.member_id AND b.revoked_at IS NOT NULL) AS revoked
FROM (SELECT member_id, json_agg(event - 'attributes' ORDER BY position)::text AS events
      FROM activity GROUP BY member_id) AS a
LEFT JOIN members AS m USING (member_id)
ORDER BY a.member_id
"""


async def every_member_activity(conn: AsyncConnection) -> AsyncIterator[Replayable]:
    """Every member's applied records with its stored figures, streamed in member id order."""
    rows = await conn.stream(text(_REPLAY).execution_options(yield_per=2000))
    async for row in rows:
        yield Replayable(
            row.member_id,
            row.level_id,
            row.active_score,
            row.passive_score,
            row.pinned_level,
            row.events,
            tuple(row.programs or ()),
            tuple(row.badges or ()),
            tuple(row.revoked or ()),
        )
