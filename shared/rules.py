"""The scoring rules and the level ladder, loaded from one versioned rules file.

The numbers (points, daily caps, thresholds) live in the file; what each activity type
means lives in `shared.scoring`. An invalid file raises `RulesError` naming what is wrong,
so a service refuses to start with it.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_RULES_PATH = Path(__file__).parent / "rules" / "default.json"

Tier = Literal["passive", "active"]
METRICS = (
    "visit_day",
    "browse_time",
    "view",
    "group_joined",
    "event_attended",
    "post",
    "reply",
    "comment",
    "article",
    "like_given",
    "like_received",
    "solution_accepted",
)


# What earns each metric's points, in words. The numbers beside them come from the rules in
# force (`Rules.how`), so no text can contradict the points a rescore put in force (SPEC §10.1).
EARNED = {
    "visit_day": "on your first visit of a day",
    "browse_time": "per full {seconds} browsed in a day",
    "view": "per piece of content read, once per content and day",
    "group_joined": "per group joined, once per group",
    "event_attended": "per event attended, once per event",
    "post": "per post started",
    "reply": "per reply",
    "comment": "per comment",
    "article": "per article or blog post published",
    "like_given": "per like given to someone else's content",
    "like_received": "per like your content receives",
    "solution_accepted": "when your reply is accepted as the solution, once per reply",
}


class RulesError(ValueError):
    """The rules file cannot be used."""


def _absent(value: object) -> bool:
    """Fields added after rules were first kept are left out of the stored body while unset, so
    a rules file kept before them still reads as the same rules (`services.write.rules.body_of`)."""
    return value is None or value == ()


# What one scored action of each metric is, for how a badge is earned (one, many).
ACTIONS = {
    "visit_day": ("day visited", "different days visited"),
    "browse_time": ("full {seconds} browsed", "full {seconds} browsed"),
    "view": ("piece of content read", "pieces of content read (once per content and day)"),
    "group_joined": ("group joined", "groups joined"),
    "event_attended": ("event attended", "events attended"),
    "post": ("post started", "posts started"),
    "reply": ("reply", "replies"),
    "comment": ("comment", "comments"),
    "article": ("article or blog post published", "articles or blog posts published"),
    "like_given": ("like given", "likes given"),
    "like_received": ("like received", "likes received"),
    "solution_accepted": ("reply accepted as the solution", "replies accepted as the solution"),
}


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Tier
    points: int = Field(ge=0)
    earned_by: str
    # Rules files before SPEC §10.1 wrote their own text here; it is kept, never shown (`Rules.how`).
    how: str | None = Field(default=None, exclude_if=_absent)
    daily_cap: int | None = Field(default=None, ge=0)
    seconds_per_point: int | None = Field(default=None, gt=0)


GRANT = re.compile(r"[a-z][a-z0-9_]{0,63}")
COLOR = re.compile(r"#[0-9a-fA-F]{6}")
ICON_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
ICON_URL = re.compile(r"https://[^\s\"'<>]{1,2000}")


def _icon(value: str) -> str:
    if ICON_URL.fullmatch(value) or ICON_NAME.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is neither an https:// URL nor an icon name (a-z, 0-9 and -, at most 64)")


Icon = Annotated[str, AfterValidator(_icon)]  # a level's or a badge's: an https:// URL or an icon name


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    tier: Tier
    passive: int = Field(default=0, ge=0)
    active: int = Field(default=0, ge=0)
    tenure_days: int = Field(default=0, ge=0)
    rank: int = 0  # set from the position in the ladder
    # How the level looks and what it grants (SPEC §10.1): all optional.
    description: str | None = Field(default=None, min_length=1, max_length=500, exclude_if=_absent)
    icon: Icon | None = Field(default=None, exclude_if=_absent)
    color: str | None = Field(default=None, exclude_if=_absent)
    grants: tuple[str, ...] = Field(default=(), exclude_if=_absent)  # those this level adds
    _held: tuple[str, ...] = PrivateAttr(default=())  # with those of the levels below: set by `Rules`

    @field_validator("color")
    @classmethod
    def _color(cls, value: str | None) -> str | None:
        if value is None or COLOR.fullmatch(value):
            return value
        raise ValueError(f"{value!r} is not a colour: write it as #rrggbb")

    @field_validator("grants")
    @classmethod
    def _grants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [g for g in value if not GRANT.fullmatch(g)]
        if bad:
            raise ValueError(f"grant names are a-z, 0-9 and _, starting with a letter, at most 64: not {bad}")
        twice = sorted({g for g in value if value.count(g) > 1})
        if twice:
            raise ValueError(f"grants named twice: {twice}")
        return value

    @property
    def held_grants(self) -> tuple[str, ...]:
        """Every privilege a member at this level holds, in the order the ladder grants them."""
        return self._held

    def ref(self) -> dict[str, object]:
        """The short form used in API answers and level-change events."""
        return {"id": self.id, "name": self.name, "tier": self.tier, "rank": self.rank}

    def requirements(self) -> dict[str, int]:
        """What this level requires, by figure: active_score, passive_score, tenure_days."""
        wanted = {"active_score": self.active, "passive_score": self.passive, "tenure_days": self.tenure_days}
        return {name: n for name, n in wanted.items() if n}

    def unmet(self, active: int, passive: int, tenure_days: int) -> list[dict[str, object]]:
        """Each requirement of this level that the given figures do not meet."""
        current = {"active_score": active, "passive_score": passive, "tenure_days": tenure_days}
        return [
            {"requirement": name, "required": n, "current": current[name], "remaining": n - current[name]}
            for name, n in self.requirements().items()
            if current[name] < n
        ]


class Program(BaseModel):
    """A programme members join by level (SPEC §11): open to members whose earned level on an
    intake date is `min_level` or above, taking them while the intake's window is open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    name: str = Field(min_length=1)
    min_level: str  # a level id of the ladder
    intakes: tuple[str, ...] = Field(min_length=1)  # "MM-DD", each year
    window_days: int = Field(ge=1, le=366)
    pinned_counts: bool = False  # whether a level an operator pinned makes a member eligible

    @model_validator(mode="after")
    def _check_intakes(self) -> Program:
        for intake in self.intakes:
            try:
                if len(intake) != 5 or intake == "02-29":
                    raise ValueError
                date.fromisoformat(f"2001-{intake}")
            except ValueError:
                raise ValueError(f"program {self.id}: intake {intake!r} is not a day of every year as MM-DD") from None
        if len(set(self.intakes)) != len(self.intakes):
            raise ValueError(f"program {self.id}: intakes repeat")
        return self

    def ref(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


class Badge(BaseModel):
    """A badge of the catalogue (SPEC §10.2): earned by a criterion the scorer evaluates, or
    `manual`, granted by an operator (`cl badge grant`) or an outside system through ingest.

    A criterion is one of: `metric` with `count` (that many scored actions of the metric,
    after reversals: its points over its points per action, rounded down; visits on N distinct
    days are `visit_day`), or `level` (the member's level is that level or one above it that
    holds its grants: higher in its tier, or any active level for a passive one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(min_length=1, max_length=500)
    icon: Icon | None = Field(default=None, exclude_if=_absent)
    link: str | None = Field(default=None, exclude_if=_absent)  # where to learn more, e.g. the academy
    metric: str | None = Field(default=None, exclude_if=_absent)
    count: int | None = Field(default=None, ge=1, exclude_if=_absent)
    level: str | None = Field(default=None, exclude_if=_absent)
    manual: bool = Field(default=False, exclude_if=lambda v: not v)

    @field_validator("link")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        if value is None or ICON_URL.fullmatch(value):
            return value
        raise ValueError(f"{value!r} is not an https:// URL")

    @model_validator(mode="after")
    def _one_way(self) -> Badge:
        ways = [self.manual, self.metric is not None, self.level is not None]
        if sum(ways) != 1:
            raise ValueError(f"badge {self.id}: give exactly one of manual: true, metric with count, or level")
        if (self.metric is None) != (self.count is None):
            raise ValueError(f"badge {self.id}: metric and count go together")
        return self

    def ref(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    metrics: dict[str, Metric]
    levels: tuple[Level, ...]
    programs: tuple[Program, ...] = ()
    badges: tuple[Badge, ...] = Field(default=(), exclude_if=_absent)

    @model_validator(mode="after")
    def _check(self) -> Rules:
        if set(self.metrics) != set(METRICS):
            missing = sorted(set(METRICS) - set(self.metrics))
            extra = sorted(set(self.metrics) - set(METRICS))
            raise ValueError(f"metrics must be exactly {list(METRICS)}; missing {missing}, unknown {extra}")
        browse = self.metrics["browse_time"]
        if browse.seconds_per_point is None:
            raise ValueError("metrics.browse_time needs seconds_per_point")
        if not self.levels or self.levels[0].passive or self.levels[0].active or self.levels[0].tenure_days:
            raise ValueError("levels[0] must be the entry level, with no requirements")
        if len({lv.id for lv in self.levels}) != len(self.levels):
            raise ValueError("level ids must be unique")
        for program in self.programs:
            if program.min_level not in {lv.id for lv in self.levels}:
                raise ValueError(f"program {program.id}: min_level {program.min_level!r} is not a level of the ladder")
        if len({p.id for p in self.programs}) != len(self.programs):
            raise ValueError("program ids must be unique")
        _check_badges(self)
        # A member's level is the highest rank whose requirements hold; ranks follow file order.
        levels = tuple(lv.model_copy(update={"rank": i + 1}) for i, lv in enumerate(self.levels))
        _hold_grants(levels)
        object.__setattr__(self, "levels", levels)
        return self

    @cached_property
    def _active_metrics(self) -> frozenset[str]:
        return frozenset(name for name, metric in self.metrics.items() if metric.tier == "active")

    def scores(self, points: dict[str, int]) -> tuple[int, int]:
        """The active and the passive score of these points by metric."""
        active = passive = 0
        for metric, n in points.items():
            if metric in self._active_metrics:
                active += n
            else:
                passive += n
        return active, passive

    def how(self, metric: str) -> str:
        """How a metric's points are earned, in words made from its numbers: "2 points per comment"."""
        m = self.metrics[metric]
        per = _duration(m.seconds_per_point or 0)
        return f"{m.points:,} {'point' if m.points == 1 else 'points'} {EARNED[metric].format(seconds=per)}"

    def grants(self, level_id: str) -> tuple[str, ...]:
        """The privileges a member at this level holds (SPEC §10.1)."""
        return self.level(level_id).held_grants

    def level_for(self, active: int, passive: int, tenure_days: int) -> Level:
        best = self.levels[0]
        for level in self.levels:
            if active >= level.active and passive >= level.passive and tenure_days >= level.tenure_days:
                best = level
        return best

    @cached_property
    def _by_id(self) -> dict[str, Level]:
        return {level.id: level for level in self.levels}

    def find(self, level_id: str) -> Level | None:
        """The level of this ladder with that id; None if this ladder has none (a level of
        other rules: levels are known by id across rules versions, never by rank)."""
        return self._by_id.get(level_id)

    def level(self, level_id: str) -> Level:
        found = self._by_id.get(level_id)
        if found is None:
            raise RulesError(f"rules {self.version} have no level {level_id!r}")
        return found

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.id == program_id), None)

    def badge(self, badge_id: str) -> Badge | None:
        return self._badges.get(badge_id)

    @cached_property
    def _badges(self) -> dict[str, Badge]:
        return {badge.id: badge for badge in self.badges}

    @cached_property
    def _metric_badges(self) -> dict[str, tuple[Badge, ...]]:
        return {m: tuple(b for b in self.badges if b.metric == m) for m in METRICS}

    def badges_of_metric(self, metric: str) -> tuple[Badge, ...]:
        """The automatic badges counting this metric's actions."""
        return self._metric_badges.get(metric, ())

    @cached_property
    def level_badges(self) -> tuple[Badge, ...]:
        """The automatic badges earned by reaching a level."""
        return tuple(b for b in self.badges if b.level is not None)

    def badge_how(self, badge: Badge) -> str:
        """How a badge is earned, in words made from its criterion and the rules' numbers."""
        if badge.manual:
            return "Awarded by the community team or a partner such as the training academy."
        if badge.level is not None:
            return f"Reach {self.level(badge.level).name}."
        assert badge.metric is not None and badge.count is not None
        one, many = ACTIONS[badge.metric]
        per = _duration(self.metrics[badge.metric].seconds_per_point or 0)
        what = (one if badge.count == 1 else many).format(seconds=per)
        return f"{'A first' if badge.count == 1 else f'{badge.count:,}'} {what}."

    def next_level(self, level_id: str) -> Level | None:
        """The level above this one in this ladder. For a level this ladder lacks (a member not
        yet rescored), none: the member's level under these rules is not known yet."""
        found = self._by_id.get(level_id)
        return self.levels[found.rank] if found and found.rank < len(self.levels) else None

    def tenure_due_at(self, active: int, passive: int, level_id: str, joined_at: datetime) -> datetime | None:
        """When tenure alone will raise the level, given today's scores; None if it never will."""
        due: datetime | None = None
        found = self._by_id.get(level_id)
        for level in self.levels[found.rank if found else 0 :]:
            if active >= level.active and passive >= level.passive:
                at = joined_at + timedelta(days=level.tenure_days)
                due = at if due is None else min(due, at)
        return due


def _check_badges(rules: Rules) -> None:
    """Badge ids are unique; a criterion names a metric that earns points, or a level of the ladder."""
    if len({b.id for b in rules.badges}) != len(rules.badges):
        raise ValueError("badge ids must be unique")
    levels = {lv.id for lv in rules.levels}
    for badge in rules.badges:
        if badge.metric is not None:
            if badge.metric not in METRICS:
                raise ValueError(f"badge {badge.id}: metric {badge.metric!r} is not one of {list(METRICS)}")
            if not rules.metrics[badge.metric].points:
                raise ValueError(f"badge {badge.id}: metric {badge.metric} earns no points, so no action of it counts")
        if badge.level is not None and badge.level not in levels:
            raise ValueError(f"badge {badge.id}: level {badge.level!r} is not a level of the ladder")


def _hold_grants(levels: tuple[Level, ...]) -> None:
    """Give each level the privileges a member holding it has (SPEC §10.1): its own and those of
    the levels below it in its tier; an active level also holds every passive level's. A
    privilege is named by one level only: the lowest that grants it, as the levels above hold it."""
    by_grant: dict[str, str] = {}
    for level in levels:
        for grant in level.grants:
            if grant in by_grant:
                raise ValueError(
                    f"grant {grant!r} is given by both {by_grant[grant]} and {level.id}: levels hold the grants "
                    "of those below them, so name it once, at the lowest level that gets it"
                )
            by_grant[grant] = level.id
    for level in levels:
        below = [
            g
            for other in levels
            if (other.tier == level.tier and other.rank <= level.rank)
            or (level.tier, other.tier) == ("active", "passive")
            for g in other.grants
        ]
        level._held = tuple(below)


def _duration(seconds: int) -> str:
    """600 → "10 minutes"; 3600 → "hour"; 90 → "90 seconds"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n:,} {unit}s"
    return "second" if seconds == 1 else f"{seconds:,} seconds"


def load_rules(path: Path | str = DEFAULT_RULES_PATH) -> Rules:
    try:
        raw = json.loads(Path(path).read_text())
        return Rules.model_validate(raw)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise RulesError(f"rules file {path} is invalid: {exc}") from exc


@cache
def default_rules() -> Rules:
    return load_rules()
