"""`level_changes` (each member's history, and the outbox the relay publishes) and
`relay_lease` (which relay may publish, until when)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.scoring import LevelChange

# A scorer's PostgreSQL sessions are named SESSION_PREFIX + its instance name.
SESSION_PREFIX = "scorer:"

# A tombstone is the outbox row of seq 0 with no payload: a member's level changes count from
# 1, so it never collides with one, not even with those of a later member of the same id
# recorded before the tombstone is sent.
TOMBSTONE_SEQ = 0


async def record_level_changes(conn: AsyncConnection, changes: list[LevelChange], payloads: list[bytes]) -> None:
    """Add level changes to the members' history, which is also the relay's outbox."""
    if not changes:
        return
    await conn.execute(
        text(
            """
            INSERT INTO level_changes (member_id, seq, payload, occurred_at)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:seqs AS int[]), CAST(:payloads AS text[]),
                                 CAST(:occurred AS timestamptz[]))
            """
        ),
        {
            "ids": [c.member_id for c in changes],
            "seqs": [c.seq for c in changes],
            "payloads": [p.decode() for p in payloads],
            "occurred": [c.occurred_at for c in changes],
        },
    )


async def record_tombstone(conn: AsyncConnection, member_id: str, now: datetime) -> None:
    """Put the member's tombstone in the outbox (after the member's other rows were deleted)."""
    await conn.execute(
        text("INSERT INTO level_changes (member_id, seq, payload, occurred_at) VALUES (:id, :seq, NULL, :now)"),
        {"id": member_id, "seq": TOMBSTONE_SEQ, "now": now},
    )


class Unsent(NamedTuple):
    id: int
    member_id: str
    payload: str | None  # None: an erased member's tombstone


async def unsent_level_changes(conn: AsyncConnection, limit: int) -> list[Unsent]:
    """The oldest level changes not yet published."""
    rows = await conn.execute(
        text("SELECT id, member_id, payload FROM level_changes WHERE sent_at IS NULL ORDER BY id LIMIT :limit"),
        {"limit": limit},
    )
    return [Unsent(row.id, row.member_id, row.payload) for row in rows]


async def mark_sent(conn: AsyncConnection, ids: list[int], now: datetime) -> None:
    """Mark level changes published; a published tombstone is deleted, so no row keeps the id."""
    await conn.execute(
        text("UPDATE level_changes SET sent_at = :now WHERE id = ANY(CAST(:ids AS bigint[])) AND payload IS NOT NULL"),
        {"ids": ids, "now": now},
    )
    await conn.execute(
        text("DELETE FROM level_changes WHERE id = ANY(CAST(:ids AS bigint[])) AND payload IS NULL"), {"ids": ids}
    )


async def take_relay_lease(conn: AsyncConnection, owner: str, ttl_s: float) -> bool:
    """One relay publishes at a time, so a member's level changes reach Kafka in seq order.

    A lease rather than a lock: it is taken (or renewed) in a short transaction, and the relay
    sends with no transaction open. It passes on when it expires, or at once when its owner
    has no session left (a scorer's sessions carry its name: a crashed scorer has none).
    """
    row = await conn.execute(
        text(
            """
            UPDATE relay_lease SET owner = :owner, expires_at = now() + make_interval(secs => :ttl)
            WHERE owner = :owner OR expires_at < now()
               OR NOT EXISTS (SELECT 1 FROM pg_stat_activity  -- names are cut to 63 bytes
                              WHERE application_name = left(:prefix || relay_lease.owner, 63))
            RETURNING 1
            """
        ),
        {"owner": owner, "ttl": ttl_s, "prefix": SESSION_PREFIX},
    )
    return row.first() is not None


async def release_relay_lease(conn: AsyncConnection, owner: str) -> None:
    await conn.execute(text("UPDATE relay_lease SET expires_at = now() WHERE owner = :owner"), {"owner": owner})


@dataclass(frozen=True)
class Backlog:
    unsent_level_changes: int
    oldest_unsent_age: float | None  # seconds, by PostgreSQL's clock
    unsynced_members: int  # members of pending view rows (the last commit's, until the next one)


# The head of the relay's queue (the first row of the partial index of unsent rows), aged by
# PostgreSQL's clock, which also stamped recorded_at: no clock skew with the scorer's host.
_OLDEST_UNSENT_AGE = (
    "SELECT extract(epoch FROM now() - recorded_at) FROM level_changes WHERE sent_at IS NULL ORDER BY id LIMIT 1"
)


async def backlog(conn: AsyncConnection) -> Backlog:
    """What waits for the relay (read through a partial index) and for Redis."""
    row = await conn.execute(
        text(
            "SELECT (SELECT count(*) FROM level_changes WHERE sent_at IS NULL) AS unsent,"
            f" ({_OLDEST_UNSENT_AGE}) AS oldest,"
            " (SELECT coalesce(sum(cardinality(member_ids)), 0) FROM pending_views) AS unsynced"
        )
    )
    got = row.one()
    return Backlog(got.unsent, None if got.oldest is None else float(got.oldest), got.unsynced)


async def oldest_unsent_age(conn: AsyncConnection) -> float | None:
    """Seconds since the oldest level change not yet published was recorded; None: none waits.
    One index probe, cheap enough for every /readyz."""
    age = (await conn.execute(text(_OLDEST_UNSENT_AGE))).scalar()
    return None if age is None else float(age)
