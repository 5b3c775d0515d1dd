"""Scoring (SPEC §4–§5): a member's state plus one activity record gives the new state and
any level change. Pure: no I/O, and the clock is passed in.

`apply` changes the `MemberState` it is given (the caller owns it and decides what to
persist). A state is small: the member's points, level and dates, and beside them the
*facts* later records need (what each content earned, each like, each day's visits and cap
use), each under a key of its own. A record reads and writes only the facts `fact_keys`
names (plus, for a reversal, the cap `freed_cap` names), so a store can keep the facts as
rows and load just those a batch names, whatever the length of the member's history;
replaying a member's records in order from an empty state always gives the same result.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, get_args

from shared.badges import Earned, crossed_by_points, reached_by_level
from shared.events import ActivityRecord, iso_utc
from shared.rules import Level, Rules

CauseKind = Literal["activity", "tenure", "rescore", "override"]
_LEVEL_CHANGE_NS = uuid.UUID("6f0e7c8e-3a51-4a0e-9d43-0d2b8f3c1a77")


@dataclass(frozen=True)
class Pin:
    """A level an operator holds a member at (SPEC §9.3), until a time or until released."""

    level: str  # its id in the rules in force
    reason: str
    until: datetime | None = None


@dataclass
class MemberState:
    """A member's figures, and the facts (by key) loaded for the records at hand.

    Fact keys and values:
      cap|<metric>|<day>          points of a capped metric earned that day
      visit|<day>                 seconds browsed that day
      view|<day>|<content>        1: viewed that day (kept only while the day's view cap has room)
      group_joined|<content>, event_attended|<content>, solution|<content>    1
      created|<content>           [metric, day, points earned, removed]
      like_given|<content>        [day, points]
      like_received|<liker>|<content>    [day, points]
    """

    member_id: str
    points: dict[str, int] = field(default_factory=dict)
    level: str | None = None  # the level's id; None before the first applied record
    seq: int = 0  # level changes so far
    joined_declared: datetime | None = None  # earliest member_joined
    first_seen: datetime | None = None  # earliest occurred_at of any event naming the member
    facts: dict[str, Any] = field(default_factory=dict)
    # What the records applied since the caller last took them earned (+) or gave back (-), as
    # (metric, day, points): the windowed leaderboards count points by the day they were earned.
    moves: list[tuple[str, str, int]] = field(default_factory=list, compare=False)
    rules_version: str | None = None  # the rules these figures are scored under
    pin: Pin | None = None
    programs: tuple[str, ...] = ()  # ids of the programmes the member is enrolled in (SPEC §11)
    # The badges the steps since the caller last took them earned (SPEC §10.2), in order; a
    # store grants each one the member does not hold yet.
    earned: list[Earned] = field(default_factory=list, compare=False)
    badges: dict[str, datetime] = field(default_factory=dict)  # those held, by id: when granted
    lost: list[str] = field(default_factory=list, compare=False)  # held badges a rescore's rules dropped

    @property
    def joined_at(self) -> datetime | None:
        return self.joined_declared or self.first_seen

    def scores(self, rules: Rules) -> tuple[int, int]:
        """The member's active and passive scores."""
        return rules.scores(self.points)

    def tenure_days(self, now: datetime) -> int:
        joined = self.joined_at
        return max(0, (now - joined).days) if joined else 0


@dataclass(frozen=True)
class LevelChange:
    member_id: str
    seq: int
    from_level: Level | None  # as the ladder it was reached under knows it
    to_level: Level  # a level of the rules in force
    active_score: int
    passive_score: int
    cause_kind: CauseKind
    cause_event_id: str | None
    cause_type: str | None
    occurred_at: datetime
    cause_reason: str | None = None  # why an operator moved the level (override)
    # The privileges the member gains and loses (SPEC §10.1), so the platform can apply them
    # from the event alone: what `to_level` holds against what the member held until now.
    grants_added: tuple[str, ...] = ()
    grants_removed: tuple[str, ...] = ()

    @property
    def promoted(self) -> bool:
        """A first level, or a higher one; otherwise a demotion. Levels compare by rank, each in
        its own ladder (a rescore's from-level may be of other rules)."""
        return self.from_level is None or self.to_level.rank > self.from_level.rank

    @property
    def event_id(self) -> str:
        """Derived from member and seq, so a consumer can dedupe redeliveries on it."""
        return str(uuid.uuid5(_LEVEL_CHANGE_NS, f"{self.member_id}\x00{self.seq}"))

    def event(self, rules_version: str, emitted_at: datetime) -> dict[str, Any]:
        """The level-change event of SPEC §6, under the rules it was decided by."""
        cause: dict[str, Any] = {"kind": self.cause_kind}
        if self.cause_event_id is not None:
            cause |= {"event_id": self.cause_event_id, "type": self.cause_type}
        if self.cause_reason is not None:
            cause["reason"] = self.cause_reason
        return {
            "event_id": self.event_id,
            "member_id": self.member_id,
            "seq": self.seq,
            "direction": "promoted" if self.promoted else "demoted",
            "from_level": self.from_level and self.from_level.ref(),
            "to_level": self.to_level.ref(),
            "grants_added": list(self.grants_added),
            "grants_removed": list(self.grants_removed),
            "active_score": self.active_score,
            "passive_score": self.passive_score,
            "cause": cause,
            "rules_version": rules_version,
            "occurred_at": iso_utc(self.occurred_at),
            "emitted_at": iso_utc(emitted_at),
        }


def _cap(metric: str, day: str) -> str:
    return f"cap|{metric}|{day}"


def like_received_prefix(liker: str) -> str:
    """The start of the keys of every like a member received from `liker` (an erasure puts a
    digest in place of the liker's id in them)."""
    return f"like_received|{liker}|"


def _like(record: ActivityRecord) -> tuple[str, str]:
    """The metric a like or unlike counts under for this record's subject, and its fact key."""
    ev = record.event
    if record.subject == ev.member_id:
        return "like_given", f"like_given|{ev.content_id}"
    return "like_received", f"{like_received_prefix(ev.member_id)}{ev.content_id}"


_CREATION = {"post", "reply", "comment", "article"}
_ONCE = {"group_joined": "group_joined", "event_attended": "event_attended", "solution_accepted": "solution"}


def fact_keys(record: ActivityRecord) -> list[str]:
    """The facts applying this record may read or write (see `freed_cap` for one more)."""
    ev = record.event
    kind, day, content = ev.type, ev.day, ev.content_id
    if kind == "visit":
        return [f"visit|{day}", _cap("visit_day", day), _cap("browse_time", day)]
    if kind == "view":
        return [f"view|{day}|{content}", _cap("view", day)]
    if kind in _ONCE:
        return [f"{_ONCE[kind]}|{content}", _cap(kind, day)]
    if kind in _CREATION:
        return [f"created|{content}", _cap(kind, day)]
    if kind == "content_removed":
        return [f"created|{content}"]
    if kind in ("like", "unlike"):
        metric, key = _like(record)
        return [key, _cap(metric, day)]
    return []


def freed_cap(key: str, value: Any) -> str | None:
    """The cap counter that reversing this fact gives room back to (it names another day)."""
    kind = key.split("|", 1)[0]
    if kind == "created":
        return _cap(value[0], value[1])
    if kind in ("like_given", "like_received"):
        return _cap(kind, value[0])
    return None


def _room(state: MemberState, rules: Rules, metric: str, day: str) -> bool:
    cap = rules.metrics[metric].daily_cap
    return cap is None or state.facts.get(_cap(metric, day), 0) < cap


def _earn(state: MemberState, rules: Rules, metric: str, day: str, points: int) -> int:
    """Add up to `points` of `metric`, as far as the day's cap allows; return what was earned."""
    cap = rules.metrics[metric].daily_cap
    if cap is not None:
        key = _cap(metric, day)
        used = state.facts.get(key, 0)
        points = max(0, min(points, cap - used))
        if points:
            state.facts[key] = used + points
    if points:
        state.points[metric] = state.points.get(metric, 0) + points
        state.moves.append((metric, day, points))
    return points


def _reverse(state: MemberState, rules: Rules, metric: str, day: str, points: int) -> None:
    """Take back exactly what an earlier event earned, freeing that room under its day's cap."""
    if not points:
        return
    if rules.metrics[metric].daily_cap is not None:
        key = _cap(metric, day)
        state.facts[key] -= points
        if not state.facts[key]:
            del state.facts[key]
    state.points[metric] -= points
    state.moves.append((metric, day, -points))
    if not state.points[metric]:
        del state.points[metric]


def _score(state: MemberState, rules: Rules, record: ActivityRecord) -> None:
    ev = record.event
    kind, day, content = ev.type, ev.day, ev.content_id or ""
    acting = record.subject == ev.member_id
    selfish = ev.target_member_id == ev.member_id
    facts = state.facts

    if kind == "visit":
        key = f"visit|{day}"
        if key not in facts:
            facts[key] = 0
            _earn(state, rules, "visit_day", day, rules.metrics["visit_day"].points)
        per = rules.metrics["browse_time"].seconds_per_point or 1
        before = facts[key]
        facts[key] = before + (ev.duration_s or 0)
        full = facts[key] // per - before // per
        _earn(state, rules, "browse_time", day, full * rules.metrics["browse_time"].points)
    elif kind == "view":
        # Once the day's cap is used up no view can earn, so later ones need not be kept.
        key = f"view|{day}|{content}"
        if key not in facts and _room(state, rules, "view", day):
            facts[key] = 1
            _earn(state, rules, "view", day, rules.metrics["view"].points)
    elif kind in ("group_joined", "event_attended"):
        key = f"{kind}|{content}"
        if key not in facts:
            facts[key] = 1
            _earn(state, rules, kind, day, rules.metrics[kind].points)
    elif kind in _CREATION:
        key = f"created|{content}"
        if key not in facts:
            facts[key] = [kind, day, _earn(state, rules, kind, day, rules.metrics[kind].points), False]
    elif kind == "content_removed":
        made = facts.get(f"created|{content}")
        if made and not made[3]:
            _reverse(state, rules, made[0], made[1], made[2])
            made[3] = True
    elif kind in ("like", "unlike") and not selfish:
        metric, key = _like(record)
        if kind == "like" and key not in facts:
            facts[key] = [day, _earn(state, rules, metric, day, rules.metrics[metric].points)]
        elif kind == "unlike" and key in facts:
            liked_day, earned = facts.pop(key)
            _reverse(state, rules, metric, liked_day, earned)
    elif kind == "solution_accepted" and not acting and not selfish:
        key = f"solution|{content}"
        if key not in facts:
            facts[key] = 1
            _earn(state, rules, "solution_accepted", day, rules.metrics["solution_accepted"].points)
    elif kind == "badge_awarded":
        badge = rules.badge(content)
        if badge is not None and badge.manual:  # the scorer refuses others live (`manual_badge_refused`)
            state.earned.append(Earned(badge.id, ev.occurred_at, state.seq, "ingest", ev.event_id))
    # member_joined, and the accepter's side of solution_accepted, earn nothing.


def _settle(
    state: MemberState,
    rules: Rules,
    now: datetime,
    cause: CauseKind,
    record: ActivityRecord | None,
    at: datetime,
    reason: str | None = None,
    before: Rules | None = None,
) -> LevelChange | None:
    """Move the level to what the scores and tenure allow, or to the pinned level while pinned.
    The present level is looked up by id in `rules`, else in `before` (the rules it was reached
    under, for a rescore)."""
    active, passive = state.scores(rules)
    held = state.pin
    level = rules.level(held.level) if held else rules.level_for(active, passive, state.tenure_days(now))
    if level.id == state.level:
        return None
    was: Level | None = None
    holds: tuple[str, ...] = ()
    if state.level is not None:
        was = rules.find(state.level) or (before or rules).level(state.level)
        # What the member holds is what the rules it reached the level under grant, even where
        # the new rules know the level by the same id but grant it otherwise.
        holds = ((before and before.find(state.level)) or was).held_grants
    change = LevelChange(
        member_id=state.member_id,
        seq=state.seq + 1,
        from_level=was,
        to_level=level,
        active_score=active,
        passive_score=passive,
        cause_kind=cause,
        cause_event_id=record.event.event_id if record else None,
        cause_type=record.event.type if record else None,
        occurred_at=at,
        cause_reason=reason,
        grants_added=tuple(g for g in level.held_grants if g not in holds),
        grants_removed=tuple(g for g in holds if g not in level.held_grants),
    )
    state.level, state.seq = level.id, change.seq
    if held is None and rules.level_badges:  # a level an operator pinned reaches no badge
        for badge in reached_by_level(rules, level):
            state.earned.append(Earned(badge.id, at, state.seq, "level", change.cause_event_id))
    return change


def apply(state: MemberState, record: ActivityRecord, now: datetime, rules: Rules) -> LevelChange | None:
    """Apply one record to its subject's state; the level is evaluated after it (SPEC §5)."""
    ev = record.event
    if state.first_seen is None or ev.occurred_at < state.first_seen:
        state.first_seen = ev.occurred_at
    if ev.type == "member_joined" and (state.joined_declared is None or ev.occurred_at < state.joined_declared):
        state.joined_declared = ev.occurred_at
    if not rules.badges:
        _score(state, rules, record)
        return _settle(state, rules, now, "activity", record, ev.occurred_at)
    start = len(state.moves)
    _score(state, rules, record)
    if len(state.moves) > start:
        _earn_badges(state, rules, record, state.moves[start:])
    return _settle(state, rules, now, "activity", record, ev.occurred_at)


def _earn_badges(state: MemberState, rules: Rules, record: ActivityRecord, moves: list[tuple[str, str, int]]) -> None:
    """The metric badges this record's points reached (SPEC §10.2)."""
    gained: dict[str, int] = {}
    for metric, _, points in moves:
        gained[metric] = gained.get(metric, 0) + points
    up = [m for m, n in gained.items() if n > 0 and rules.badges_of_metric(m)]
    if not up:
        return
    before = {m: state.points.get(m, 0) - gained[m] for m in up}
    for badge in crossed_by_points(rules, before, state.points, up):
        state.earned.append(Earned(badge.id, record.event.occurred_at, state.seq, "activity", record.event.event_id))


def manual_badge_refused(record: ActivityRecord, rules: Rules) -> str | None:
    """Why the rules refuse a badge_awarded record (a badge they lack, or one not manual), or None."""
    if record.event.type != "badge_awarded":
        return None
    badge = rules.badge(record.event.content_id or "")
    if badge is None:
        return f"the rules in force ({rules.version}) have no badge {record.event.content_id!r}"
    if not badge.manual:
        return f"badge {badge.id!r} is earned by its criterion, not awarded: only manual badges can be"
    return None


def apply_batch(
    states: dict[str, MemberState], records: Iterable[ActivityRecord], now: datetime, rules: Rules
) -> list[LevelChange]:
    """The batch step: apply records in order, each member/event id once (the first one seen;
    a repeat counts once, SPEC §3), creating the state of members seen for the first time."""
    changes, seen = [], set()
    for record in records:
        key = (record.subject, record.event.event_id)
        if key in seen:
            continue
        seen.add(key)
        state = states.get(record.subject)
        if state is None:
            state = states[record.subject] = MemberState(record.subject)
        change = apply(state, record, now, rules)
        if change:
            changes.append(change)
    return changes


def facts_needed(records: Iterable[ActivityRecord]) -> dict[str, set[str]]:
    """By member, the facts these records may read or write; with the caps `freed_cap` names
    for the facts found among them, that is every fact applying them touches."""
    wanted: dict[str, set[str]] = {}
    for record in records:
        wanted.setdefault(record.subject, set()).update(fact_keys(record))
    return wanted


@lru_cache(maxsize=4096)  # per earned point on the hot path; a batch names few days
def periods(day: str) -> tuple[str, str, str]:
    """The calendar month, ISO week and calendar year a day (YYYY-MM-DD, UTC) falls in:
    "month:2026-11", "week:2026-W48", "year:2026"."""
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"month:{day[:7]}", f"week:{year}-W{week:02d}", f"year:{day[:4]}"


@lru_cache(maxsize=1024)
def period_start(period: str) -> date:
    """The first day of a period ("month:2026-11", "week:2026-W48", "year:2026")."""
    kind, name = period.split(":", 1)
    if kind == "year":
        return date(int(name), 1, 1)
    if kind == "month":
        year, month = map(int, name.split("-"))
        return date(year, month, 1)
    iso_year, week = map(int, name.split("-W"))
    return date.fromisocalendar(iso_year, week, 1)


@lru_cache(maxsize=1024)
def period_end(period: str) -> datetime:
    """When a period ("month:2026-11", "week:2026-W48", "year:2026") ends: UTC midnight after its last day."""
    kind = period.split(":", 1)[0]
    first = period_start(period)
    if kind == "year":
        after = date(first.year + 1, 1, 1)
    elif kind == "month":
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        after = first + timedelta(days=7)
    return datetime(after.year, after.month, after.day, tzinfo=UTC)


def oldest_kept(today: date, weeks: int, months: int, years: int) -> dict[str, str]:
    """The oldest period of each kind kept, when the running week, month and year are kept with
    the `weeks`, `months` and `years` before them: "week:2025-W49", "month:2024-11", "year:2021".
    Names of one kind sort as their periods do, so older ones are those that sort before."""
    monday = today - timedelta(days=today.weekday())
    iso_year, week, _ = (monday - timedelta(weeks=weeks)).isocalendar()
    month = today.year * 12 + today.month - 1 - months
    return {
        "week": f"week:{iso_year}-W{week:02d}",
        "month": f"month:{month // 12:04d}-{month % 12 + 1:02d}",
        "year": f"year:{today.year - years:04d}",
    }


# What a board's `period` may be; `board_period` says which of these name a period.
PERIOD_PATTERN = "^(all|week|month|year|week:[0-9]{4}-W[0-9]{2}|month:[0-9]{4}-[0-9]{2}|year:[0-9]{4})$"
_PERIOD = re.compile(r"(week):[0-9]{4}-W[0-9]{2}|(month):[0-9]{4}-[0-9]{2}|(year):[0-9]{4}")
RUNNING = ("month", "week", "year")  # the order `periods` names them in


def board_period(period: str, today: date) -> str:
    """The period a board's `period` names on `today` (UTC): "all"; the running "week", "month"
    or "year"; or one named ("week:2026-W49", "month:2026-11", "year:2025"). ValueError, naming
    what is wrong, for a name of no period or of one not begun."""
    if period == "all":
        return period
    if period in RUNNING:
        return periods(today.isoformat())[RUNNING.index(period)]
    found = _PERIOD.fullmatch(period)
    if found is None:
        raise ValueError(f"{period!r} is not a period: all, week, month, year, or one named like week:2026-W49")
    kind = next(k for k in found.groups() if k)
    try:
        start = period_start(period)
    except ValueError:
        raise ValueError(f"{period!r} names no {kind}") from None
    if start > today:
        raise ValueError(f"{period!r} has not begun")
    return period


# The metrics with boards of their own beside the tiers' (SPEC §11: accepted solutions, "most
# helpful"): their points are kept per period under the metric's name where a tier's are kept
# under the tier's.
BoardMetric = Literal["solution_accepted"]
BOARD_METRICS: frozenset[str] = frozenset(get_args(BoardMetric))


def period_points(moves: Iterable[tuple[str, str, int]], rules: Rules) -> dict[tuple[str, str], int]:
    """What moves add to each (board, period), a board being a tier or a metric of
    `BOARD_METRICS`: points count in the month, week and year of the day they were earned, and
    a reversal takes them out of that same month, week and year."""
    out: dict[tuple[str, str], int] = {}
    for metric, day, points in moves:
        boards = (rules.metrics[metric].tier, metric) if metric in BOARD_METRICS else (rules.metrics[metric].tier,)
        for board in boards:
            for period in periods(day):
                out[(board, period)] = out.get((board, period), 0) + points
    return {key: n for key, n in out.items() if n}


def rescore(
    state: MemberState, records: Iterable[ActivityRecord], now: datetime, rules: Rules, before: Rules
) -> tuple[MemberState, LevelChange | None]:
    """The member as if each of its applied records (in their original order) had been scored
    under `rules` (SPEC §9.1): new points and facts, the level history kept, and one level
    change (cause `rescore`) when the level differs, by id, from the one reached under `before`
    (the member's rules until now), whatever the shape of either ladder. The new state's moves
    are every point the replay earned, so a store can rebuild the member's periods from them.
    A pin must name a level of `rules` (`cl rescore` refuses rules that drop a pinned level)."""
    replayed = MemberState(state.member_id, pin=state.pin, programs=state.programs, badges=dict(state.badges))
    for record in records:
        apply(replayed, record, now, rules)
    replayed.level, replayed.seq, replayed.rules_version = state.level, state.seq, rules.version
    return replayed, _settle(replayed, rules, now, "rescore", None, now, before=before)


def pin(state: MemberState, held: Pin, now: datetime, rules: Rules) -> LevelChange | None:
    """Hold a member's level (SPEC §9.3): a level change when it differs from the present one.
    A pin replaces any earlier one."""
    if state.level is None:
        raise ValueError(f"member {state.member_id!r} has no level yet: nothing to pin")
    if rules.find(held.level) is None:
        raise ValueError(f"the rules in force ({rules.version}) have no level {held.level!r}")
    if held.until is not None and held.until <= now:
        raise ValueError(f"the pin would end ({held.until.isoformat()}) before it begins")
    state.pin = held
    return _settle(state, rules, now, "override", None, now, held.reason)


def release(
    state: MemberState, now: datetime, rules: Rules, reason: str, at: datetime | None = None
) -> LevelChange | None:
    """End a pin: the level follows the scores and tenure again, a level change when that moves it."""
    state.pin = None
    return _settle(state, rules, now, "override", None, at or now, reason)


PIN_EXPIRED = "pin expired"


def pin_expired(state: MemberState, now: datetime) -> bool:
    return state.pin is not None and state.pin.until is not None and state.pin.until <= now


def reevaluate_tenure(state: MemberState, now: datetime, rules: Rules) -> LevelChange | None:
    """Raise a level that tenure alone now allows, with no new activity (SPEC §5); or end a pin
    whose time is up, after which the level follows the scores and tenure."""
    due = tenure_due_at(state, rules)
    if due is None or due > now:
        return None
    if state.pin is not None:
        return release(state, now, rules, PIN_EXPIRED, at=due)
    return _settle(state, rules, now, "tenure", None, due)


def tenure_due_at(state: MemberState, rules: Rules) -> datetime | None:
    """When tenure alone will next raise this member's level (or, while pinned, when the pin
    ends), or None if it never will as things stand."""
    if state.pin is not None:
        return state.pin.until
    joined = state.joined_at
    if joined is None or state.level is None:
        return None
    active, passive = state.scores(rules)
    return rules.tenure_due_at(active, passive, state.level, joined)
