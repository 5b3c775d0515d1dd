"""The scoring rules and the level ladder, loaded from one versioned rules file.

The numbers (points, daily caps, thresholds) live in the file; what each activity type
means lives in `shared.scoring`. An invalid file raises `RulesError` naming what is wrong,
so a service refuses to start with it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import cache, cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class RulesError(ValueError):
    """The rules file cannot be used."""


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Tier
    points: int = Field(ge=0)
    earned_by: str
    how: str
    daily_cap: int | None = Field(default=None, ge=0)
    seconds_per_point: int | None = Field(default=None, gt=0)


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    tier: Tier
    passive: int = Field(default=0, ge=0)
    active: int = Field(default=0, ge=0)
    tenure_days: int = Field(default=0, ge=0)
    rank: int = 0  # set from the position in the ladder

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


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    metrics: dict[str, Metric]
    levels: tuple[Level, ...]

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
        # A member's level is the highest rank whose requirements hold; ranks follow file order.
        object.__setattr__(
            self, "levels", tuple(lv.model_copy(update={"rank": i + 1}) for i, lv in enumerate(self.levels))
        )
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


def load_rules(path: Path | str = DEFAULT_RULES_PATH) -> Rules:
    try:
        raw = json.loads(Path(path).read_text())
        return Rules.model_validate(raw)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise RulesError(f"rules file {path} is invalid: {exc}") from exc


@cache
def default_rules() -> Rules:
    return load_rules()
