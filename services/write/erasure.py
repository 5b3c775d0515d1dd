"""Erasing a member (SPEC §9.4): one transaction deletes everything PostgreSQL stores under the
member's id and puts a tombstone in the outbox; then the member leaves Redis.

Other members keep the points they earned from the member's likes: in their facts and
applied records the id becomes a digest, keyed by a random key used for this erasure only and
never stored, so not even a guessable id can be recovered from it. A later rescore replays
those records to the same facts.

A like is two records, one on each member's partition, and a partition may lag: records sent
before the erasure may be applied after it. The erasure keeps, until the scorer has passed
where each partition ended when it ran, the stand-in digest and a lookup digest of the id
(`erased_members`); the scorer puts the stand-in in place of the id in those records
(`erase_late`), and drops those of the member itself. Records sent after the erasure are a
later member's, whatever their partition.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.members import MemberCache, lookup
from services.write.sql import badges, erasure, members, outbox, rules, stats, views
from services.write.sql.erasure import ErasedId
from shared.events import ActivityEvent, ActivityRecord


@dataclass(frozen=True)
class Ends:
    """Where each partition of the activity topic ended when an erasure began: the records
    below were sent before it."""

    topic: str
    offsets: list[int]  # by partition


@dataclass
class Erased:
    deleted: dict[str, int] = field(default_factory=dict)  # rows deleted, by table
    level_id: str | None = None  # the member's level when erased; None: no `members` row
    others: int = 0  # members whose facts or records named the member
    digested_facts: int = 0
    digested_records: int = 0
    stamp: int = 0  # above every version of the member's views: Redis refuses those from now on
    redis_removed: int | None = None  # the view and leaderboard places removed from Redis; None: not yet

    @property
    def stored(self) -> bool:
        return any(self.deleted.values()) or bool(self.digested_facts or self.digested_records)


def digest(member_id: str) -> str:
    """An irreversible stand-in for the id, valid as a member id (so replays validate)."""
    key = secrets.token_bytes(32)  # this erasure's only: never stored
    return "erased:" + hmac.new(key, member_id.encode(), hashlib.sha256).hexdigest()[:32]


async def erase_stored(engine: AsyncEngine, member_id: str, now: datetime, ends: Ends) -> Erased:
    """Delete the member from PostgreSQL in one transaction, with the tombstone in the outbox.
    `ends`: where each partition of the activity topic ended as the erasure began; the records
    before those ends not yet applied are erased as the scorer applies them.

    No transaction applying records runs meanwhile (the scoring lock, held alone): each one
    runs before the erasure, and is erased by it, or after it, and sees `erased_members`."""
    async with engine.begin() as conn:
        await rules.exclude_scoring(conn)
        key = lookup(member_id)
        earlier = (await erasure.erased_ids(conn, [key])).get(key)
        stand_in = earlier.stand_in if earlier else digest(member_id)  # an earlier erasure's records, still late
        others = await erasure.named_by(conn, member_id)
        states = await members.lock_states(conn, sorted({member_id, *others}))
        erased = Erased(others=len(others))
        erased.digested_facts, erased.digested_records = await erasure.digest_named(conn, others, member_id, stand_in)
        if member_id in states:
            erased.level_id = states[member_id].level
            if erased.level_id is not None:
                await stats.count(conn, {erased.level_id: -1}, {}, now)
            await badges.count(conn, dict.fromkeys(states[member_id].badges, -1))
        erased.deleted = await erasure.delete_member(conn, member_id)
        await views.unpend_member(conn, member_id)
        await outbox.record_tombstone(conn, member_id, now)
        if any(ends.offsets):
            await erasure.record_erased(conn, key, ErasedId(stand_in, ends.topic, ends.offsets), now)
        erased.stamp = await members.next_member_version(conn)
        return erased


Late = tuple[int, ActivityRecord | None]  # a record of a batch (by index): with stand-ins, or None to drop


async def erase_late(
    conn: AsyncConnection, topic: str, batch: list[tuple[ActivityRecord, int, int]]
) -> tuple[list[Late], list[tuple[str, str, list[str]]]]:
    """What the erasures before a batch make of its records (record, partition, offset): each
    record sent before an erasure that names the erased member gets the stand-in in place of
    the id, and its attributes dropped, as the erasure did to those applied before it; one of
    the member's own is dropped. Also returns, for each dropped record, (member, stand-in,
    the other members it names), whose stored facts and records the erasure may not have
    reached (it finds them through the member's own records)."""
    keys = {m: lookup(m) for record, _, _ in batch for m in _named(record.event)}
    found = await erasure.erased_ids(conn, list(keys.values()))
    if not found:
        return [], []
    erased = {m: e for m, key in keys.items() if (e := found.get(key))}
    late: list[Late] = []
    others: dict[str, set[str]] = {}
    for i, (record, partition, offset) in enumerate(batch):
        hit = {
            m: e.stand_in for m in _named(record.event) if (e := erased.get(m)) and e.before(topic, partition, offset)
        }
        if record.subject in hit:
            late.append((i, None))
            others.setdefault(record.subject, set()).update(_named(record.event) - {record.subject})
        elif hit:
            ev = record.event
            update = {"member_id": hit.get(ev.member_id, ev.member_id), "attributes": None}
            if ev.target_member_id is not None:
                update["target_member_id"] = hit.get(ev.target_member_id, ev.target_member_id)
            late.append((i, ActivityRecord(record.subject, ev.model_copy(update=update))))
    return late, [(m, erased[m].stand_in, sorted(o)) for m, o in others.items() if o]


def _named(event: ActivityEvent) -> set[str]:
    return {event.member_id} | ({event.target_member_id} if event.target_member_id else set())


async def erase_views(cache: MemberCache, member_id: str, erased: Erased) -> None:
    """Remove the member's view and leaderboard places from Redis. A tombstone goes first:
    Redis refuses from then on the member's views of versions below the erasure's stamp, so
    a view of an earlier commit written late (a slow scorer, a repair, a rebuild page read
    before the erasure) does not bring the member back; a later member's views are above it."""
    await cache.tombstone(member_id, erased.stamp)
    erased.redis_removed = await cache.forget(member_id)
