"""The shapes of the API's answers, for its OpenAPI document (frontends and the fuzz tests read
them). Answers are rendered by `services.api.answers.render` and the scorer's level-change
payloads; these models describe them. Also how query parameters are read: `DIGITS`, `ONCE`."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from shared.rules import Tier


def _digits(value: object) -> object:
    # pydantic alone would also read ` 5`, `5_000` and `1.0` as integers.
    if isinstance(value, str) and not re.fullmatch("-?[0-9]+", value):
        raise PydanticCustomError("int_parsing", "Input should be a whole number written in digits")
    return value


# Put after the `Query(...)` of an integer query parameter (`limit`, `offset`, `before`): digits
# only, as the document's `type: integer` says. (Before it, FastAPI would leave the bounds out of
# the document.)
DIGITS = BeforeValidator(_digits)


def _iso_day(value: object) -> object:
    # pydantic alone would also read a day as a number of seconds (`1700000000`) or a time.
    if isinstance(value, str) and not re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise PydanticCustomError("date_parsing", "Input should be a day written YYYY-MM-DD")
    return value


# Put after the `Query(...)` of a date query parameter (`as_of`): a day as YYYY-MM-DD only.
ISO_DAY = BeforeValidator(_iso_day)


async def _each_query_parameter_once(request: Request) -> None:
    # Async, so it runs on the event loop rather than in a worker thread.
    declared = [p.alias for p in request.scope["route"].dependant.query_params]
    twice = [name for name in declared if len(request.query_params.getlist(name)) > 1]
    if twice:
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": "given more than once", "type": "repeated"} for name in twice]
        )


# In the `dependencies` of every route that takes query parameters: one given more than once is
# refused, rather than answered for one of its values picked silently (`?offset=5&offset=0`).
# Not app-wide: a dependency costs about 12 µs a request, and the hot member read takes none.
ONCE = Depends(_each_query_parameter_once)


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the document lists every field an answer has


class LevelRef(Schema):
    id: str
    name: str
    tier: Tier
    rank: int


class Unmet(Schema):
    requirement: Literal["active_score", "passive_score", "tenure_days"]
    required: int
    current: int
    remaining: int


class NextLevel(LevelRef):
    unmet: list[Unmet]


class Pinned(Schema):
    """An operator holds the member's level (SPEC §9.3): why, and until when (null: until released)."""

    reason: str
    until: AwareDatetime | None


class ProgramRef(Schema):
    id: str
    name: str


class HeldBadge(Schema):
    id: str
    name: str
    granted_at: AwareDatetime


class Member(Schema):
    member_id: str
    level: LevelRef
    grants: list[str]  # the privileges the level holds, its own and those below it (SPEC §10.1)
    pinned: Pinned | None  # the level stays whatever the scores do, while pinned
    active_score: int
    passive_score: int
    tenure_days: int
    joined_at: AwareDatetime
    points: dict[str, int]
    next_level: NextLevel | None
    updated_at: AwareDatetime
    programs: list[ProgramRef]  # the programmes the member is enrolled in (SPEC §11)
    badges: list[HeldBadge]  # the badges the member holds, in the order granted (SPEC §10.2)


class Members(Schema):
    members: list[Member]
    missing: list[str]


class Cause(Schema):
    kind: Literal["activity", "tenure", "rescore", "override"]
    event_id: str | None = None
    type: str | None = None
    reason: str | None = None  # why an operator moved the level (override)


class LevelChanged(Schema):
    """A level-change event, as published on the level-changes topic (SPEC §6)."""

    event_id: str
    member_id: str
    seq: int
    direction: Literal["promoted", "demoted"]
    from_level: LevelRef | None
    to_level: LevelRef
    # What the change grants and takes away (SPEC §10.1); changes recorded before grants existed have neither.
    grants_added: list[str] = []
    grants_removed: list[str] = []
    active_score: int
    passive_score: int
    cause: Cause
    rules_version: str
    occurred_at: AwareDatetime
    emitted_at: AwareDatetime


class History(Schema):
    member_id: str
    level_changes: list[LevelChanged]
    next_before: int | None


class LadderLevel(LevelRef):
    requires: dict[str, int]  # by figure (active_score, passive_score, tenure_days); a figure not named: none
    description: str | None
    icon: str | None  # an https URL, or an icon name for the platform's own icon set
    color: str | None  # "#rrggbb"
    grants: list[str]  # every privilege a member at this level holds
    new_grants: list[str]  # those of them this level adds: the levels below it lack them


class PointsRule(Schema):
    metric: str
    tier: Tier
    earned_by: str
    how: str  # made from the numbers beside it
    points: int  # per action; browse_time: per seconds_per_point seconds browsed in a day
    daily_cap: int | None  # the most points of this metric one member earns in a UTC day
    seconds_per_point: int | None


class Ladder(Schema):
    rules_version: str
    levels: list[LadderLevel]
    scores: dict[Tier, list[str]]
    points: list[PointsRule]


class LevelCount(LevelRef):
    members: int
    promoted_last_30d: int  # promotions into this level over the last 720 whole UTC hours


class TierCounts(Schema):
    passive: int
    active: int


class ChangeCounts(Schema):
    promoted: int
    demoted: int


class RecentChanges(Schema):
    last_24h: ChangeCounts
    last_7d: ChangeCounts


class Stats(Schema):
    """Counts kept by the scorer as it goes; the windows are whole UTC hours (the last 24, the last 168)."""

    members: int
    by_level: list[LevelCount]
    by_tier: TierCounts
    level_changes: RecentChanges
    records_applied_last_24h: int


class BoardEntry(Schema):
    rank: int
    member_id: str
    level: LevelRef
    score: int


class Leaderboard(Schema):
    tier: Tier
    metric: str | None  # the metric ranked by, instead of the tier's score
    period: str  # as asked: all, week, month, year, or a past one ("year:2025")
    period_name: str  # "all", or the period's name: "month:2026-11", "week:2026-W48", "year:2026"
    exclude: Literal["pinned"] | None  # who is left out, ranks counted without them
    total: int  # members with points on this board
    entries: list[BoardEntry]


class Rank(Schema):
    member_id: str
    tier: Tier
    metric: str | None
    period: str
    period_name: str
    exclude: Literal["pinned"] | None
    rank: int | None  # none without points on this board, or when the member is left out
    score: int


class LevelMember(Schema):
    member_id: str
    level: LevelRef  # the level the member is at: the one asked for, or the one below it
    active_score: int
    passive_score: int
    tenure_days: int
    needs: list[Unmet]  # what the member still needs of the level asked for (none for its holders)


class LevelMembers(Schema):
    """Members at a level (by the score of its tier), or one level below it (by what they still need)."""

    level: LevelRef
    requires: dict[str, int]
    below: LevelRef | None  # the level one rank down; none for the first
    total: int
    members: list[LevelMember]


class IntakeWindow(Schema):
    intake: date  # the intake date whose window is open
    closes: date  # its last day


class ProgramInfo(ProgramRef):
    min_level: LevelRef
    intakes: list[str]  # "MM-DD", each year
    window_days: int
    pinned_counts: bool  # whether a pinned level makes a member eligible
    open_window: IntakeWindow | None  # today's (UTC), if an intake window is open
    next_intake: date  # the first intake date from today on
    enrolled: int  # members enrolled now


class Programs(Schema):
    today: date  # UTC
    programs: list[ProgramInfo]


class EligibleMember(Schema):
    member_id: str
    level: LevelRef  # the level that makes the member eligible on that day
    reached_at: AwareDatetime  # when the member reached it (the level change's occurred_at)
    enrolled: bool


class Eligible(Schema):
    program: ProgramRef
    as_of: date
    members: list[EligibleMember]  # by member id
    next_after: str | None  # the member id to page after, when more may follow


class BadgeInfo(Schema):
    id: str
    name: str
    description: str
    icon: str | None
    link: str | None  # where to learn more (the academy's certification, say)
    manual: bool  # granted by hand or by an outside system, not by a criterion
    how: str  # how it is earned, in words made from the rules in force
    metric: str | None  # a count of scored actions of this metric,
    count: int | None  # this many
    level: LevelRef | None  # or reaching this level
    holders: int  # members holding it now


class Badges(Schema):
    rules_version: str
    badges: list[BadgeInfo]
