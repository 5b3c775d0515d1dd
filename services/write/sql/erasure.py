"""`erased_members`, and what an erasure deletes or digests in the other tables (SPEC §9.4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.write.sql import rowcount
from shared.events import NAMING_TWO
from shared.scoring import like_received_prefix


@dataclass(frozen=True)
class ErasedId:
    """An erased member whose records sent before the erasure may still be unapplied."""

    stand_in: str  # the digest the erasure put in place of the id
    topic: str  # the activity topic, and where each of its partitions ended (by partition)
    ends: list[int]

    def before(self, topic: str, partition: int, offset: int) -> bool:
        """Whether this record was sent before the erasure."""
        return topic == self.topic and partition < len(self.ends) and offset < self.ends[partition]


async def erased_ids(conn: AsyncConnection, lookups: list[str]) -> dict[str, ErasedId]:
    """The erased members among these (by lookup digest)."""
    rows = await conn.execute(
        text("SELECT lookup, stand_in, topic, ends FROM erased_members WHERE lookup = ANY(CAST(:l AS text[]))"),
        {"l": lookups},
    )
    return {row.lookup: ErasedId(row.stand_in, row.topic, list(row.ends)) for row in rows}


async def record_erased(conn: AsyncConnection, lookup: str, erased: ErasedId, now: datetime) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO erased_members (lookup, stand_in, topic, ends, erased_at)
            VALUES (:lookup, :stand_in, :topic, CAST(:ends AS bigint[]), :now)
            ON CONFLICT (lookup) DO UPDATE SET stand_in = excluded.stand_in, topic = excluded.topic,
                ends = excluded.ends, erased_at = excluded.erased_at
            """
        ),
        {"lookup": lookup, "stand_in": erased.stand_in, "topic": erased.topic, "ends": erased.ends, "now": now},
    )


async def prune_erased(conn: AsyncConnection, group_id: str) -> int:
    """Forget the erased members whose records sent before the erasure are all applied: the
    group's stored offset of every partition is past where it ended."""
    result = await conn.execute(
        text(
            """
            DELETE FROM erased_members AS e WHERE NOT EXISTS (
                SELECT 1 FROM generate_subscripts(e.ends, 1) AS i
                WHERE e.ends[i] > 0 AND NOT EXISTS (
                    SELECT 1 FROM consumer_offsets AS o
                    WHERE o.group_id = :group_id AND o.topic = e.topic AND o.partition = i - 1
                      AND o.next_offset >= e.ends[i]))
            """
        ),
        {"group_id": group_id},
    )
    return rowcount(result)


async def named_by(conn: AsyncConnection, member_id: str) -> list[str]:
    """The other members the member's applied records name: each like, unlike or accepted
    solution is recorded once per member it names, so theirs name this member too."""
    rows = await conn.execute(
        text(
            """
            SELECT DISTINCT CASE WHEN event->>'member_id' = :id THEN event->>'target_member_id'
                                 ELSE event->>'member_id' END AS other
            FROM activity WHERE member_id = :id AND event->>'type' = ANY(CAST(:types AS text[]))
            """
        ),
        {"id": member_id, "types": sorted(NAMING_TWO)},
    )
    return sorted(row.other for row in rows if row.other is not None and row.other != member_id)


async def digest_named(conn: AsyncConnection, others: list[str], member_id: str, digest: str) -> tuple[int, int]:
    """In other members' facts and applied records, put the digest where the member's id was
    (the attributes the member's events carried go too: never scored, they may say anything);
    returns how many facts and records."""
    facts = await conn.execute(
        text(
            """
            UPDATE member_facts SET fact = :new_prefix || substr(fact, length(:old_prefix) + 1)
            WHERE member_id = ANY(CAST(:others AS text[])) AND starts_with(fact, :old_prefix)
            """
        ),
        {"others": others, "old_prefix": like_received_prefix(member_id), "new_prefix": like_received_prefix(digest)},
    )
    records = await conn.execute(
        text(
            """
            UPDATE activity SET event = (event || jsonb_strip_nulls(jsonb_build_object(
                    'member_id', CASE WHEN event->>'member_id' = :id THEN CAST(:digest AS text) END,
                    'target_member_id', CASE WHEN event->>'target_member_id' = :id THEN CAST(:digest AS text) END
                ))) - 'attributes'
            WHERE member_id = ANY(CAST(:others AS text[]))
              AND (event->>'member_id' = :id OR event->>'target_member_id' = :id)
            """
        ),
        {"others": others, "id": member_id, "digest": digest},
    )
    return rowcount(facts), rowcount(records)


_ERASED_TABLES = (
    "members",
    "member_facts",
    "activity",
    "level_changes",
    "member_periods",
    "pin_audit",
    "program_enrolments",
    "program_audit",
    "member_badges",
    "badge_audit",
)


async def delete_member(conn: AsyncConnection, member_id: str) -> dict[str, int]:
    """Delete every row stored under the member's id; returns how many from each table."""
    # An earlier erasure's tombstone not yet sent is replaced by this one's, and not counted.
    await conn.execute(text("DELETE FROM level_changes WHERE member_id = :id AND payload IS NULL"), {"id": member_id})
    deleted = {}
    for table in _ERASED_TABLES:
        result = await conn.execute(text(f"DELETE FROM {table} WHERE member_id = :id"), {"id": member_id})
        deleted[table] = rowcount(result)
    return deleted
