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


class MemberEvent(NamedTuple):
    """A member's event other than a level change (a badge granted, a programme joined), as it
    goes on the member-keyed topic. `payload` is the event as published: it carries `event_id`,
    `member_id` and `emitted_at`, which the relay reads for the CloudEvents headers."""

    member_id: str
    event_type: str  # its CloudEvents type, e.g. community.badge.granted
    payload: bytes
    occurred_at: datetime


# One outbox row as `record_events` writes it: a LevelChange with its payload, or a MemberEvent.
Event = tuple[LevelChange, bytes] | MemberEvent


async def record_events(conn: AsyncConnection, events: list[Event]) -> None:
    """Add members' events to the outbox, published in the order given (level changes also make
    the members' level history)."""
    if not events:
        return
    rows = [
        (e.member_id, None, e.event_type, e.payload, e.occurred_at)
        if isinstance(e, MemberEvent)
        else (e[0].member_id, e[0].seq, None, e[1], e[0].occurred_at)
        for e in events
    ]
    await conn.execute(
        text(
            """
            INSERT INTO level_changes (member_id, seq, event_type, payload, occurred_at)
            SELECT member_id, seq, event_type, payload, occurred_at
            FROM unnest(CAST(:ids AS text[]), CAST(:seqs AS int[]), CAST(:types AS text[]),
                        CAST(:payloads AS text[]), CAST(:occurred AS timestamptz[]))
                 WITH ORDINALITY AS e(member_id, seq, event_type, payload, occurred_at, position)
            ORDER BY position
            """
        ),
        {
            "ids": [r[0] for r in rows],
            "seqs": [r[1] for r in rows],
            "types": [r[2] for r in rows],
            "payloads": [r[3].decode() for r in rows],
            "occurred": [r[4] for r in rows],
        },
    )


async def record_level_changes(conn: AsyncConnection, changes: list[LevelChange], payloads: list[bytes]) -> None:
    """Add level changes to the members' history, which is also the relay's outbox."""
    await record_events(conn, list(zip(changes, payloads, strict=True)))


async def record_tombstone(conn: AsyncConnection, member_id: str, now: datetime) -> None:
    """Put the member's tombstone in the outbox (after the member's other rows were deleted)."""
    await conn.execute(
        text("INSERT INTO level_changes (member_id, seq, payload, occurred_at) VALUES (:id, :seq, NULL, :now)"),
        {"id": member_id, "seq": TOMBSTONE_SEQ, "now": now},
    )


class Unsent(NamedTuple):
    id: int
    member_id: str
    event_type: str | None  # None: a level change, or a tombstone
    payload: str | None  # None: an erased member's tombstone


async def unsent_level_changes(conn: AsyncConnection, limit: int) -> list[Unsent]:
    """The oldest level changes not yet published."""
    rows = await conn.execute(
        text(
            "SELECT id, member_id, event_type, payload FROM level_changes"
            " WHERE sent_at IS NULL ORDER BY id LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [Unsent(row.id, row.member_id, row.event_type, row.payload) for row in rows]


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
