"""Erasing a member (SPEC §9.4): one transaction deletes everything PostgreSQL stores under the
member's id and puts a tombstone in the outbox; then the member leaves Redis.

Other members keep the points they earned from the member's likes: in their facts and
applied records the id becomes a digest, keyed by a random key used for this erasure only and
never stored, so not even a guessable id can be recovered from it. A later rescore replays
those records to the same facts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.members import MemberCache
from services.scorer import repository as repo

ATTEMPTS = 5  # a member whose likes keep naming new members while it runs is tried again


@dataclass
class Erased:
    deleted: dict[str, int] = field(default_factory=dict)  # rows deleted, by table
    level_id: str | None = None  # the member's level when erased; None: no `members` row
    others: int = 0  # members whose facts or records named the member
    digested_facts: int = 0
    digested_records: int = 0
    pending: list[int] = field(default_factory=list)  # pending view rows that named the member
    redis_removed: int | None = None  # the view and leaderboard places removed from Redis; None: not yet
    redis_confirmed: bool = True  # False: views of earlier commits may still have been on their way

    @property
    def stored(self) -> bool:
        return any(self.deleted.values()) or bool(self.digested_facts or self.digested_records)


def digest(member_id: str) -> str:
    """An irreversible stand-in for the id, valid as a member id (so replays validate)."""
    key = secrets.token_bytes(32)  # this erasure's only: never stored
    return "erased:" + hmac.new(key, member_id.encode(), hashlib.sha256).hexdigest()[:32]


class _NamedMore(Exception):
    """Records naming more members were applied between looking them up and locking."""


async def erase_stored(engine: AsyncEngine, member_id: str, now: datetime) -> Erased:
    """Delete the member from PostgreSQL in one transaction, with the tombstone in the outbox.

    The member's row and those of the members it names are locked in id order first, as the
    scorer locks them, so no batch applies to them in between and no deadlock can form."""
    stand_in = digest(member_id)
    for _ in range(ATTEMPTS):
        try:
            async with engine.begin() as conn:
                others = await repo.named_by(conn, member_id)
                states = await repo.lock_states(conn, sorted({member_id, *others}))
                if set(await repo.named_by(conn, member_id)) - set(others):
                    raise _NamedMore()
                erased = Erased(others=len(others))
                erased.digested_facts, erased.digested_records = await repo.digest_named(
                    conn, others, member_id, stand_in
                )
                if member_id in states:
                    erased.level_id = states[member_id].level
                    if erased.level_id is not None:
                        await repo.count(conn, {erased.level_id: -1}, {}, now)
                erased.deleted = await repo.delete_member(conn, member_id)
                erased.pending = await repo.unpend_member(conn, member_id)
                await repo.record_tombstone(conn, member_id, now)
                return erased
        except _NamedMore:
            continue
    raise RuntimeError(f"the member's records kept naming new members; tried {ATTEMPTS} times")


async def erase_views(engine: AsyncEngine, cache: MemberCache, member_id: str, erased: Erased, wait_s: float) -> None:
    """Remove the member's view and leaderboard places from Redis, once the views of the
    commits that named the member are written (their pending rows gone), so none lands after;
    after `wait_s` it removes them anyway and says it could not confirm that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while erased.pending:
        async with engine.connect() as conn:
            if not await repo.pending_left(conn, erased.pending):
                break
        if loop.time() >= deadline:
            erased.redis_confirmed = False
            break
        await asyncio.sleep(0.2)
    erased.redis_removed = await cache.forget(member_id)
