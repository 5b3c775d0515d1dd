"""Replaying members' applied records (SPEC §9.1): the scorer brings a member scored under
earlier rules up to the rules in force this way (`unit_of_work`), and `cl rescore` reports
what new rules would change, and applies them, with the same `shared.scoring.rescore`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.write.sql import activity, members
from shared.events import EVENTS, ActivityRecord
from shared.rules import Rules
from shared.scoring import MemberState, Pin, rescore


def records_of(member_id: str, events: str | None) -> list[ActivityRecord]:
    """A member's applied records from their events as one JSON array (as `activity` returns
    them), validated in one call: they were validated on their way in."""
    return [ActivityRecord(member_id, event) for event in EVENTS.validate_json(events or "[]")]


@dataclass(frozen=True)
class Replayed:
    """A member as the rules replayed give it, beside what is stored now."""

    state: MemberState  # under the new rules
    stored: tuple[str, int, int] | None  # level id, active and passive scores; None: no figures stored
    dropped_pin: str | None  # a pinned level the new rules lack (the state is as if it were released)
    granted: tuple[str, ...] = ()  # badges the history earns under the new rules that the member has not had
    revoked: tuple[str, ...] = ()  # badges the member holds that the new rules lack


async def count_members(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await members.count_members(conn)


async def replay_everyone(engine: AsyncEngine, rules: Rules, now: datetime) -> AsyncIterator[Replayed]:
    """Every member's applied records replayed under `rules` (pins kept), streamed in member id
    order; writes nothing. Memory does not grow with the members."""
    async with engine.connect() as conn:
        async for row in activity.every_member_activity(conn):
            pinned, dropped = row.pinned_level, None
            if pinned is not None and rules.find(pinned) is None:
                pinned, dropped = None, pinned  # what the member's figures give, once the pin is released
            start = MemberState(
                row.member_id, pin=None if pinned is None else Pin(pinned, "pinned"), programs=row.programs
            )
            state, _ = rescore(start, records_of(row.member_id, row.events), now, rules, rules)
            stored = None
            if row.level_id is not None and row.active_score is not None and row.passive_score is not None:
                stored = (row.level_id, row.active_score, row.passive_score)
            had = set(row.badges) | set(row.revoked)
            granted = tuple(dict.fromkeys(e.badge_id for e in state.earned if e.badge_id not in had))
            revoked = tuple(b for b in row.badges if rules.badge(b) is None)
            yield Replayed(state, stored, dropped, granted, revoked)


async def members_behind(engine: AsyncEngine, version: str, after: str, limit: int) -> list[str]:
    """The next members (in id order, after `after`) not yet scored under this version."""
    async with engine.connect() as conn:
        return await members.members_behind(conn, version, after, limit)


async def count_behind(engine: AsyncEngine, version: str) -> int:
    async with engine.connect() as conn:
        return await members.count_behind(conn, version)
