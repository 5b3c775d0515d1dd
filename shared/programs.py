"""Programmes (SPEC §11): intake windows, and who is eligible on a date, from the level history.

Pure: the history and the pin audit are passed in, and so is the day.

Eligibility on a day is the member's *earned* level at the end of that day (UTC): the to-level
of the last level change that occurred before the next midnight (by `occurred_at`, then `seq`).
Outside a pin that is the level the member holds, whatever caused the change (a release's
change, cause `override`, moves the level back to what the scores and tenure give). While a
pin holds the level the scorer records no change the scores would make, so the earned level
under a pin is the one held when the pin began: the last change before it. A programme with
`pinned_counts` takes the level held, pinned or not. Levels compare by rank in the ladder in
force; a level that ladder lacks (a member not yet rescored) by its rank in the rules the
change was made under, as its payload gives it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from shared.events import iso_utc
from shared.rules import Program, Rules
from shared.scoring import MemberState

_PROGRAM_EVENT_NS = uuid.UUID("b3c1d0a2-55e4-4f6b-9a0e-2f7d8c4e1b93")
JOINED, LEFT = "community.program.joined", "community.program.left"


@dataclass(frozen=True, slots=True)
class Step:
    """One level change of a member's history, as eligibility reads it."""

    occurred_at: datetime
    seq: int
    level_id: str
    rank: int  # in the rules the change was made under


@dataclass(frozen=True, slots=True)
class PinSpan:
    """A stretch of time a member's level was pinned: from `start` until `stop` (None: still)."""

    start: datetime
    stop: datetime | None


def day_end(day: date) -> datetime:
    """The first instant after a day (UTC midnight): a change counts on `day` if it occurred
    before it. (After the calendar's last day, the last instant there is.)"""
    if day == date.max:
        return datetime.max.replace(tzinfo=UTC)
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def intakes_around(program: Program, day: date) -> list[date]:
    """The programme's intake dates of the year before, of, and after `day`'s, in order."""
    return sorted(
        date.fromisoformat(f"{year:04d}-{md}")
        for year in (day.year - 1, day.year, day.year + 1)
        for md in program.intakes
    )


def open_intake(program: Program, day: date) -> date | None:
    """The intake whose window holds `day` (the intake date and the `window_days - 1` days
    after it), or None when no window is open."""
    held = [i for i in intakes_around(program, day) if i <= day < i + timedelta(days=program.window_days)]
    return held[-1] if held else None


def window_closes(program: Program, intake: date) -> date:
    """The last day an intake's window is open."""
    return intake + timedelta(days=program.window_days - 1)


def next_intake(program: Program, day: date) -> date:
    """The first intake date on or after `day`."""
    return next(i for i in intakes_around(program, day) if i >= day)


def pin_spans(audit: Iterable[tuple[str, datetime, datetime | None]]) -> list[PinSpan]:
    """The stretches a member was pinned, from the pin audit's (action, at, until) lines in the
    order written: a pin starts one (or replaces the pin of one already running), an unpin ends
    it then, an expiry at the pin's end; a pin whose end passed before the next line ended then."""
    spans: list[PinSpan] = []
    start: datetime | None = None
    until: datetime | None = None
    for action, at, pin_until in audit:
        if start is not None and until is not None and until <= at:
            spans.append(PinSpan(start, until))
            start = None
        if action == "pin":
            start = at if start is None else start
            until = pin_until
        elif start is not None:
            stop = at if action == "unpin" else (pin_until or at)
            spans.append(PinSpan(start, min(stop, until) if until else stop))
            start = None
    if start is not None:
        spans.append(PinSpan(start, until))
    return spans


def level_at(steps: Sequence[Step], spans: Sequence[PinSpan], at: datetime, pinned_counts: bool) -> Step | None:
    """The change that set the member's level as eligibility counts it at `at` (changes that
    occurred before it): the earned level, or with `pinned_counts` the level held."""
    if not pinned_counts:
        for span in spans:
            if span.start < at and (span.stop is None or at <= span.stop):
                at = span.start
    before = [s for s in steps if s.occurred_at < at]
    return max(before, key=lambda s: (s.occurred_at, s.seq)) if before else None


def rank_of(step: Step, rules: Rules) -> int:
    found = rules.find(step.level_id)
    return found.rank if found else step.rank


def eligible_level(
    program: Program, rules: Rules, steps: Sequence[Step], spans: Sequence[PinSpan], day: date
) -> Step | None:
    """The level change that makes the member eligible for the programme on `day`, or None if
    the member is not eligible on that day."""
    step = level_at(steps, spans, day_end(day), program.pinned_counts)
    if step is None or rank_of(step, rules) < rules.level(program.min_level).rank:
        return None
    return step


def qualifying_ids(program: Program, rules: Rules, known: Iterable[str]) -> list[str]:
    """The level ids a member's history must reach for the member to be eligible: the levels
    of the ladder in force from `min_level` up, and every level id `known` (of other rules)
    that ladder lacks, whose rank only their change's payload tells."""
    least = rules.level(program.min_level).rank
    return sorted({lv.id for lv in rules.levels if lv.rank >= least} | {i for i in known if rules.find(i) is None})


def program_ref(program_id: str, rules: Rules) -> dict[str, str]:
    """A programme, named as these rules name it (under its id if they no longer define it)."""
    found = rules.program(program_id)
    return found.ref() if found else {"id": program_id, "name": program_id}


def program_event(
    action: Literal["joined", "left"],
    member_id: str,
    program: dict[str, str],
    audit_id: int,
    intake: date | None,
    operator: str,
    reason: str | None,
    at: datetime,
) -> dict[str, Any]:
    """A member joined or left a programme, as published on the member-keyed topic (SPEC §11).
    Its id is derived from the audit line that recorded it, so a consumer can dedupe on it."""
    event_id = uuid.uuid5(_PROGRAM_EVENT_NS, f"{member_id}\x00{program['id']}\x00{action}\x00{audit_id}")
    return {
        "event_id": str(event_id),
        "member_id": member_id,
        "program": program,
        "intake": intake.isoformat() if intake else None,
        "operator": operator,
        "reason": reason,
        "occurred_at": iso_utc(at),
        "emitted_at": iso_utc(at),
    }


def below_programs(state: MemberState, rules: Rules, now: datetime) -> list[str]:
    """The programmes (of `rules`) the member is enrolled in whose `min_level` the member's
    level under `rules` is now below: the level its scores and tenure earn, or with
    `pinned_counts` the level held. A rescore reports these members and leaves them enrolled."""
    out = []
    for program_id in state.programs:
        program = rules.program(program_id)
        if program is None or state.level is None:
            continue
        if program.pinned_counts:
            level = rules.find(state.level)
        else:
            level = rules.level_for(*state.scores(rules), state.tenure_days(now))
        if level is None or level.rank < rules.level(program.min_level).rank:
            out.append(program_id)
    return out
