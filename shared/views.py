"""A member as readers see it (SPEC §7): the figures the scorer last committed, tagged with the
`members` row's version.

The scorer makes one from a member's state after each commit and stores it as JSON in Redis
(`MemberView.stored`); the API reads that, or makes one from the `members` row when Redis
lacks the member. Either way the JSON document is the same, field for field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.events import iso_utc
from shared.rules import Rules
from shared.scoring import MemberState


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    level_id: str
    active_score: int
    passive_score: int
    points: dict[str, int]
    joined_at: datetime
    pinned_reason: str | None  # an operator holds the level (SPEC §9.3): why,
    pinned_until: datetime | None  # and until when (None: until released)
    updated_at: datetime
    version: int
    programs: tuple[str, ...] = ()  # ids of the programmes the member is in (SPEC §11)
    badges: tuple[tuple[str, datetime], ...] = ()  # those held (SPEC §10.2): id, when granted; by time

    @classmethod
    def of(cls, state: MemberState, rules: Rules, version: int, updated_at: datetime) -> MemberView:
        """The view of a member's state, scored under `rules`, as committed at `version`."""
        assert state.level is not None and state.joined_at is not None
        active, passive = state.scores(rules)
        held = state.pin
        return cls(
            member_id=state.member_id,
            level_id=state.level,
            active_score=active,
            passive_score=passive,
            points=dict(state.points),
            joined_at=state.joined_at,
            pinned_reason=held.reason if held else None,
            pinned_until=held.until if held else None,
            updated_at=updated_at,
            version=version,
            programs=state.programs,
            badges=_held(state.badges),
        )

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> MemberView:
        """The view a `members` row holds, read by column name."""
        points = row["points"]
        return cls(
            member_id=row["member_id"],
            level_id=row["level_id"],
            active_score=row["active_score"],
            passive_score=row["passive_score"],
            points=json.loads(points) if isinstance(points, str) else points,
            joined_at=row["joined_at"],
            pinned_reason=row["pinned_reason"],
            pinned_until=row["pinned_until"],
            updated_at=row["updated_at"],
            version=row["version"],
            programs=tuple(row.get("programs") or ()),
            badges=_held({b: datetime.fromisoformat(at) for b, at in _json(row.get("badges") or {}).items()}),
        )

    def stored(self) -> dict[str, Any]:
        """The view as JSON, as Redis holds it and the API renders it. Its fields stay as they
        are: views written by an earlier release must still read (one without `programs` is in none,
        one without `badges` holds none)."""
        return {
            "member_id": self.member_id,
            "level_id": self.level_id,
            "active_score": self.active_score,
            "passive_score": self.passive_score,
            "points": self.points,
            "joined_at": iso_utc(self.joined_at),
            "pinned": pinned(self.pinned_reason, self.pinned_until) if self.pinned_reason is not None else None,
            "updated_at": iso_utc(self.updated_at),
            "version": self.version,
            "programs": list(self.programs),
            "badges": [{"id": badge, "granted_at": iso_utc(at)} for badge, at in self.badges],
        }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _held(badges: Mapping[str, datetime]) -> tuple[tuple[str, datetime], ...]:
    """Badges held, in the order they were granted (then by id)."""
    return tuple(sorted(badges.items(), key=lambda item: (item[1], item[0])))


def pinned(reason: str, until: datetime | None) -> dict[str, Any]:
    """How a view and the API's answer show a pinned level (SPEC §9.3)."""
    return {"reason": reason, "until": iso_utc(until) if until else None}
