"""The scoring transactions, the scorer's and `cl`'s. Each one stores, together, what a step
changed: the partitions' next offsets (guarded by the epoch this consumer claimed), the
records applied (a repeated member/event id is skipped), the members' figures and the facts
they touched, their level changes (the outbox) and the note that their views are due in Redis.

Every transaction scores under the rules in force (`services.write.rules`). A member
still scored under earlier rules is first rescored under them (SPEC §9.1): its applied
records replayed (`services.write.replay`), in order, in the same transaction, so no record
counts under both."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import history
from services.common.failures import RecordRefused
from services.common.members import Periods
from services.write.erasure import erase_late
from services.write.outbox import payload
from services.write.replay import records_of
from services.write.rules import RulesBook
from services.write.sql import (
    activity,
    badges,
    erasure,
    members,
    offsets,
    outbox,
    periods,
    pins,
    programs,
    stats,
    views,
)
from services.write.sql.badges import Grant
from services.write.sql.members import Facts
from services.write.sql.offsets import OffsetMove
from services.write.sql.outbox import MemberEvent
from services.write.sql.pins import PinAudit
from shared.badges import GRANTED, REVOKED, badge_event, badge_ref, cause_of
from shared.events import ActivityRecord
from shared.programs import (
    JOINED,
    LEFT,
    day_end,
    eligible_level,
    next_intake,
    open_intake,
    program_event,
    program_ref,
    window_closes,
)
from shared.rules import Rules
from shared.scoring import (
    PIN_EXPIRED,
    LevelChange,
    MemberState,
    Pin,
    apply_batch,
    facts_needed,
    manual_badge_refused,
    period_points,
    pin,
    pin_expired,
    reevaluate_tenure,
    release,
    rescore,
)

# Who the audit log names when a pin ends by itself.
SWEEP_OPERATOR = "scorer"


class Incoming(NamedTuple):
    record: ActivityRecord
    raw: str  # the event as received, kept in `activity`
    partition: int
    offset: int


@dataclass
class Committed:
    states: dict[str, MemberState] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # each member's new row version
    changes: list[LevelChange] = field(default_factory=list)
    pending: int | None = None  # the pending_views row naming the members changed
    periods: Periods = field(default_factory=dict)  # new points of the (tier, period)s touched
    applied: int = 0  # records not seen before
    erased: int = 0  # records of members erased after they were sent, dropped
    rules: Rules | None = None  # the rules the states are scored under
    badges: dict[str, int] = field(default_factory=dict)  # holders added (+) and taken (-), by badge


class Fenced(Exception):
    """The stored offsets of these partitions refused this consumer's write."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"offset write refused for partitions {sorted(partitions)}")
        self.partitions = partitions


class WrongRules(Exception):
    """The rules in force are not those a rescore was asked for."""


class UnknownMember(LookupError):
    """No event has named this member: there is no level to pin or release."""

    def __init__(self, member_id: str) -> None:
        super().__init__(f"no member {member_id!r} has been seen")
        self.member_id = member_id


class UnitOfWork:
    def __init__(self, engine: AsyncEngine, rules: Rules, group_id: str, topic: str) -> None:
        self.engine, self.group_id, self.topic = engine, group_id, topic
        self.book = RulesBook(rules)

    async def commit(
        self, moves: list[OffsetMove], incoming: list[Incoming], now: datetime, written: list[int]
    ) -> Committed:
        """Apply a batch: only the figures and facts its records name are read and written.
        `written` are pending view rows whose views Redis now holds, deleted here."""
        async with self.engine.begin() as conn:
            refused = await offsets.advance_offsets(conn, self.group_id, self.topic, moves)
            if refused:
                raise Fenced(refused)
            rules = await self.book.in_force(conn)
            incoming, erased, named = await self._erase_late(conn, incoming)
            rows = [(i.record.subject, i.record.event.event_id, i.raw, i.partition, i.offset) for i in incoming]
            new = await activity.record_activity(conn, rows, now)
            fresh = [i.record for i in incoming if (i.record.subject, i.record.event.event_id) in new]
            for record in fresh:
                if why := manual_badge_refused(record, rules):
                    raise RecordRefused(why)
            reached = {o for _, _, others in named for o in others}
            states = await members.lock_states(conn, sorted({r.subject for r in fresh} | reached))
            for member, stand_in, others in named:
                await erasure.digest_named(conn, others, member, stand_in)
            rescored, reset = await self._bring_up(conn, states, rules, now, new)
            loaded = await members.load_facts(conn, states, facts_needed(fresh))
            changes = rescored + apply_batch(states, fresh, now, rules)
            committed = await self._save(conn, rules, states, loaded, changes, now, written, reset, len(new))
        committed.applied, committed.erased = len(new), erased
        return committed

    async def _erase_late(
        self, conn: AsyncConnection, incoming: list[Incoming]
    ) -> tuple[list[Incoming], int, list[tuple[str, str, list[str]]]]:
        """The batch as the erasures before it leave it (`erasure.erase_late`), how many of
        its records they dropped, and the members those named, to digest."""
        late, named = await erase_late(conn, self.topic, [(i.record, i.partition, i.offset) for i in incoming])
        if not late:
            return incoming, 0, named
        changed, kept = dict(late), []
        for index, i in enumerate(incoming):
            if index not in changed:
                kept.append(i)
            elif (record := changed[index]) is not None:
                kept.append(i._replace(record=record, raw=record.event.to_json().decode()))
        return kept, sum(record is None for record in changed.values()), named

    async def sweep_tenure(self, now: datetime, limit: int, written: list[int]) -> Committed:
        """Raise the levels that tenure alone now allows, for up to `limit` members. (Also forget
        the erased members whose records sent before their erasure are all applied.)"""
        async with self.engine.begin() as conn:
            rules = await self.book.in_force(conn)
            await erasure.prune_erased(conn, self.group_id)
            states = await members.lock_tenure_due(conn, now, limit)
            changes, reset = await self._bring_up(conn, states, rules, now)
            expired = [
                PinAudit(s.member_id, "expire", s.pin.level, PIN_EXPIRED, s.pin.until, SWEEP_OPERATOR, now)
                for s in states.values()
                if s.pin and pin_expired(s, now)
            ]
            changes += [c for s in states.values() if (c := reevaluate_tenure(s, now, rules))]
            await pins.record_pin_audit(conn, expired)
            return await self._save(conn, rules, states, {}, changes, now, written, reset)

    async def rescore(self, member_ids: list[str], version: str, now: datetime, written: list[int]) -> Committed:
        """Rescore these members under the rules in force, which must be `version` (a later
        `cl rescore --apply` may have replaced them); members already under them are left as they are."""
        async with self.engine.begin() as conn:
            rules = await self.book.in_force(conn)
            if rules.version != version:
                raise WrongRules(f"the rules in force are now {rules.version!r}, not {version!r}")
            states = await members.lock_states(conn, member_ids)
            states = {m: s for m, s in states.items() if s.rules_version != version}
            changes, reset = await self._bring_up(conn, states, rules, now)
            return await self._save(conn, rules, states, {}, changes, now, written, reset)

    async def prune_periods(self, oldest: dict[str, str], limit: int) -> int:
        """Delete up to `limit` period points older than the oldest kept of each kind."""
        async with self.engine.begin() as conn:
            return await periods.prune_periods(conn, oldest, limit)

    async def _bring_up(
        self,
        conn: AsyncConnection,
        states: dict[str, MemberState],
        rules: Rules,
        now: datetime,
        skip: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    ) -> tuple[list[LevelChange], Periods]:
        """Rescore the members scored under other rules: replay their applied records (but
        `skip`, this transaction's own) under `rules`, replacing their facts and periods.
        Returns their level changes, and their periods' points (0 where they have none now)."""
        behind = sorted(m for m, s in states.items() if s.rules_version != rules.version)
        if not behind:
            return [], {}
        events = await activity.member_activity(conn, behind, skip)
        changes, points = [], {}
        for member in behind:
            before = await self.book.get(conn, states[member].rules_version)
            states[member], change = rescore(states[member], records_of(member, events.get(member)), now, rules, before)
            if change:
                changes.append(change)
            state = states[member]
            state.lost = [b for b in state.badges if rules.badge(b) is None]
            for badge_id in state.lost:
                del state.badges[badge_id]
            points[member] = period_points(states[member].moves, rules)
            states[member].moves.clear()
        await members.drop_facts(conn, behind)
        await badges.drop(conn, behind, [b.id for b in rules.badges])
        return changes, await periods.replace_period_points(conn, points)

    async def pin(self, member_id: str, held: Pin, operator: str, now: datetime) -> Committed:
        """Pin a member's level (replacing any pin), with the audit line. Raises `UnknownMember`,
        or ValueError for a pin the ladder or the clock refuses."""
        async with self.engine.begin() as conn:
            rules, states, changes, reset = await self._lock_one(conn, member_id, now)
            change = pin(states[member_id], held, now, rules)
            await pins.record_pin_audit(
                conn, [PinAudit(member_id, "pin", held.level, held.reason, held.until, operator, now)]
            )
            return await self._save(conn, rules, states, {}, changes + ([change] if change else []), now, [], reset)

    async def unpin(self, member_id: str, reason: str, operator: str, now: datetime) -> Committed | None:
        """Release a member's pin, with the audit line; None if the member was not pinned."""
        async with self.engine.begin() as conn:
            rules, states, changes, reset = await self._lock_one(conn, member_id, now)
            held = states[member_id].pin
            if held is None:
                return None
            change = release(states[member_id], now, rules, reason)
            await pins.record_pin_audit(
                conn, [PinAudit(member_id, "unpin", held.level, reason, held.until, operator, now)]
            )
            return await self._save(conn, rules, states, {}, changes + ([change] if change else []), now, [], reset)

    async def enroll(
        self, member_id: str, program_id: str, operator: str, reason: str | None, now: datetime
    ) -> Committed | None:
        """Enrol a member in a programme of the rules in force (SPEC §11), with the audit line
        and the joined event; None if the member is enrolled already. Refused (ValueError)
        outside an intake window, naming the next intake, or for a member not eligible on the
        intake date; raises `UnknownMember`."""
        async with self.engine.begin() as conn:
            rules = await self.book.in_force(conn)
            program = rules.program(program_id)
            if program is None:
                raise ValueError(f"the rules in force ({rules.version}) have no programme {program_id!r}")
            today = now.date()
            intake = open_intake(program, today)
            if intake is None:
                upcoming = next_intake(program, today)
                raise ValueError(
                    f"{program.name} takes members only in an intake window; the next intake is"
                    f" {upcoming.isoformat()} (open until {window_closes(program, upcoming).isoformat()})"
                )
            rules, states, changes, reset = await self._lock_one(conn, member_id, now)
            state = states[member_id]
            if program_id in state.programs:
                return None
            steps, spans = (await history.histories(conn, [member_id], day_end(intake)))[member_id]
            if eligible_level(program, rules, steps, spans, intake) is None:
                least = rules.level(program.min_level).name
                raise ValueError(
                    f"{member_id} was not eligible for {program.name} on the intake date {intake.isoformat()}"
                    f" (an earned level of {least} or above by the end of that day)"
                )
            audit_id = await programs.enrol(conn, member_id, program_id, intake, operator, reason, now)
            state.programs = (*state.programs, program_id)
            event = program_event("joined", member_id, program.ref(), audit_id, intake, operator, reason, now)
            done = await self._save(conn, rules, states, {}, changes, now, [], reset)
            await outbox.record_events(conn, [MemberEvent(member_id, JOINED, orjson.dumps(event), now)])
            return done

    async def leave(
        self, member_id: str, program_id: str, operator: str, reason: str | None, now: datetime
    ) -> Committed | None:
        """Take a member out of a programme, with the audit line and the left event; None if
        the member was not enrolled in it. Raises `UnknownMember`."""
        async with self.engine.begin() as conn:
            rules, states, changes, reset = await self._lock_one(conn, member_id, now)
            state = states[member_id]
            left = await programs.leave(conn, member_id, program_id, operator, reason, now)
            if left is None:
                return None
            audit_id, intake = left
            state.programs = tuple(p for p in state.programs if p != program_id)
            named = program_ref(program_id, rules)
            event = program_event("left", member_id, named, audit_id, intake, operator, reason, now)
            done = await self._save(conn, rules, states, {}, changes, now, [], reset)
            await outbox.record_events(conn, [MemberEvent(member_id, LEFT, orjson.dumps(event), now)])
            return done

    async def _lock_one(
        self, conn: AsyncConnection, member_id: str, now: datetime
    ) -> tuple[Rules, dict[str, MemberState], list[LevelChange], Periods]:
        """The rules in force and the member, locked and scored under them (rescored if need be)."""
        rules = await self.book.in_force(conn)
        states = await members.lock_states(conn, [member_id])
        if member_id not in states:
            raise UnknownMember(member_id)
        changes, reset = await self._bring_up(conn, states, rules, now)
        return rules, states, changes, reset

    async def _save(
        self,
        conn: AsyncConnection,
        rules: Rules,
        states: dict[str, MemberState],
        loaded: Facts,
        changes: list[LevelChange],
        now: datetime,
        written: list[int],
        reset: Periods | None = None,
        applied: int = 0,
    ) -> Committed:
        # The stats counters are a few rows every transaction writes: written last, they stay
        # locked only for the COMMIT, so concurrent scorers do not queue on them all along.
        if not states:
            await stats.count(conn, *_counts(changes, applied), now)
            return Committed(rules=rules)
        saved = [states[m] for m in sorted(states)]
        held, badge_events = await _grant_earned(conn, states, rules, now)
        versions = await members.save_states(conn, saved, rules, now)
        await members.save_facts(conn, saved, loaded)
        await outbox.record_events(conn, _in_order(changes, [payload(c, rules, now) for c in changes], badge_events))
        deltas = {m: by for m, s in states.items() if (by := period_points(s.moves, rules))}
        touched = reset or {}
        for member, by in (await periods.add_period_points(conn, deltas)).items():
            touched[member] = {**touched.get(member, {}), **by}
        pending = await views.add_pending_views(conn, sorted(states), written)
        await badges.count(conn, held)
        await stats.count(conn, *_counts(changes, applied), now)
        return Committed(states, versions, changes, pending, touched, rules=rules, badges=held)

    async def grant_badge(
        self, member_id: str, badge_id: str, operator: str, reason: str | None, now: datetime
    ) -> Committed | None:
        """Grant a badge of the rules in force by hand (SPEC §10.2), with the audit line and the
        granted event; None if the member holds it. ValueError for a badge the rules lack;
        raises `UnknownMember`."""
        async with self.engine.begin() as conn:
            rules, states, changes, reset = await self._lock_one(conn, member_id, now)
            badge = rules.badge(badge_id)
            if badge is None:
                raise ValueError(f"the rules in force ({rules.version}) have no badge {badge_id!r}")
            state = states[member_id]
            cause = {"kind": "operator", "operator": operator, "reason": reason}
            if badge_id in state.badges or not await badges.grant_again(conn, member_id, badge_id, cause, now):
                return None
            state.badges[badge_id] = now
            await badges.audit(conn, member_id, badge_id, "grant", reason, operator, now)
            event = badge_event("granted", member_id, badge.ref(), now, cause, rules.version, now, now)
            done = await self._save(conn, rules, states, {}, changes, now, [], reset)
            await outbox.record_events(conn, [MemberEvent(member_id, GRANTED, orjson.dumps(event), now)])
            await badges.count(conn, {badge_id: 1})
            return done

    async def revoke_badge(
        self, member_id: str, badge_id: str, operator: str, reason: str | None, now: datetime
    ) -> Committed | None:
        """Revoke a badge the member holds, with the audit line and the revoked event; the
        scorer will not grant it again by itself. None if the member does not hold it."""
        async with self.engine.begin() as conn:
            rules, states, changes, reset = await self._lock_one(conn, member_id, now)
            state = states[member_id]
            granted_at = await badges.revoke(conn, member_id, badge_id, now)
            if granted_at is None:
                return None
            state.badges.pop(badge_id, None)
            await badges.audit(conn, member_id, badge_id, "revoke", reason, operator, now)
            cause = {"kind": "operator", "operator": operator, "reason": reason}
            event = badge_event(
                "revoked", member_id, badge_ref(badge_id, rules), granted_at, cause, rules.version, now, now
            )
            done = await self._save(conn, rules, states, {}, changes, now, [], reset)
            await outbox.record_events(conn, [MemberEvent(member_id, REVOKED, orjson.dumps(event), now)])
            await badges.count(conn, {badge_id: -1})
            return done


# A member's badge event, with where it goes among the member's level changes: after the
# change of seq `after_seq` (0: before them all).
_Placed = tuple[int, MemberEvent]


async def _grant_earned(
    conn: AsyncConnection, states: dict[str, MemberState], rules: Rules, now: datetime
) -> tuple[dict[str, int], list[_Placed]]:
    """Grant the badges the members' steps earned that they do not hold (once: a row already
    kept, even revoked, grants nothing), and revoke those a rescore's rules dropped. Returns
    what that adds to each badge's holders, and the events."""
    held: Counter[str] = Counter()
    placed: list[_Placed] = []
    wanted: dict[tuple[str, str], tuple[Grant, int]] = {}
    for member, state in states.items():
        for badge_id in state.lost:
            held[badge_id] -= 1
            cause = {"kind": "rescore"}
            event = badge_event("revoked", member, badge_ref(badge_id, rules), now, cause, rules.version, now, now)
            placed.append((0, MemberEvent(member, REVOKED, orjson.dumps(event), now)))
        state.lost = []
        for e in state.earned:
            if e.badge_id not in state.badges and (member, e.badge_id) not in wanted:
                wanted[(member, e.badge_id)] = (Grant(member, e.badge_id, e.at, cause_of(e)), e.after_seq)
        state.earned.clear()
    granted = await badges.grant(conn, [g for g, _ in wanted.values()])
    for (member, badge_id), (g, after_seq) in wanted.items():
        if (member, badge_id) not in granted:
            continue  # kept already: granted before, or revoked by an operator
        states[member].badges[badge_id] = g.granted_at
        held[badge_id] += 1
        event = badge_event(
            "granted", member, badge_ref(badge_id, rules), g.granted_at, g.cause, rules.version, g.granted_at, now
        )
        placed.append((after_seq, MemberEvent(member, GRANTED, orjson.dumps(event), now)))
    return dict(held), placed


def _in_order(changes: list[LevelChange], payloads: list[bytes], placed: list[_Placed]) -> list[outbox.Event]:
    """The level changes in their order, each member's badge events among its own changes
    where they happened (the topic is keyed by member: only a member's own order matters)."""
    if not placed:
        return list(zip(changes, payloads, strict=True))
    waiting: dict[str, list[_Placed]] = {}
    for item in sorted(placed, key=lambda p: p[0]):  # stable: a step's events keep their order
        waiting.setdefault(item[1].member_id, []).append(item)
    out: list[outbox.Event] = []
    for change, body in zip(changes, payloads, strict=True):
        queue = waiting.get(change.member_id, [])
        while queue and queue[0][0] < change.seq:
            out.append(queue.pop(0)[1])
        out.append((change, body))
    out += [event for queue in waiting.values() for _, event in queue]
    return out


def _counts(changes: list[LevelChange], applied: int) -> tuple[dict[str, int], dict[str, int]]:
    """What these changes and records add to the stats: members per level, and this hour's
    promotions (also by the level reached), demotions and records applied."""
    levels: Counter[str] = Counter()
    hourly = Counter({"applied": applied})
    for change in changes:
        levels[change.to_level.id] += 1
        if change.from_level is not None:
            levels[change.from_level.id] -= 1
        hourly["promoted" if change.promoted else "demoted"] += 1
        if change.promoted:  # into which level, for the last 30 days' promotions of `GET /v1/stats`
            hourly[f"promoted:{change.to_level.id}"] += 1
    return dict(levels), dict(hourly)
