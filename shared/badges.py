"""Badges (SPEC §10.2): when a member earns one, and the events that say so. Pure.

An automatic badge is earned by the step that meets its criterion: the record whose points
take a metric's count of scored actions from below the badge's count to it or above, or a
level change to its level or above (an operator's pin reaches no badge; its release does). Evaluated after
each record, it reads nothing but the member's points and level, which the scorer holds for
every member of a batch anyway: no counter is read for it, and no member is scanned. The
first crossing is the grant (its time is the record's or the change's); a store keeps one
grant per member and badge, so a later crossing (after a reversal) grants nothing new.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.events import iso_utc
from shared.rules import Badge, Level, Rules

GRANTED, REVOKED = "community.badge.granted", "community.badge.revoked"
_BADGE_EVENT_NS = uuid.UUID("0d6c2a8e-91b4-4f57-8c3e-5a7f1e2b9d44")

CauseKind = Literal["activity", "level", "ingest", "operator", "rescore"]


@dataclass(frozen=True, slots=True)
class Earned:
    """A badge a step earned a member."""

    badge_id: str
    at: datetime  # when: the record's occurred_at, or the level change's
    after_seq: int  # the member's level changes before it, to order it among them
    cause_kind: CauseKind
    cause_event_id: str | None = None  # the record that earned it


def actions(points: dict[str, int], rules: Rules, metric: str) -> int:
    """How many scored actions of a metric these points are: its points over its points per
    action, rounded down (an action a daily cap let earn only part of counts as far as it earned)."""
    per = rules.metrics[metric].points
    return points.get(metric, 0) // per if per else 0


def holds_level(rules: Rules, level_id: str | None, badge_level: str) -> bool:
    """Whether a member at `level_id` has reached `badge_level`: that level, or one above it
    holding its grants (higher in its tier, or any active level for a passive one)."""
    if level_id is None:
        return False
    at, wanted = rules.find(level_id), rules.find(badge_level)
    if at is None or wanted is None:
        return False
    if at.tier == wanted.tier:
        return at.rank >= wanted.rank
    return (at.tier, wanted.tier) == ("active", "passive")


def crossed_by_points(
    rules: Rules, before: dict[str, int], after: dict[str, int], metrics: Iterable[str]
) -> list[Badge]:
    """The automatic badges of these metrics whose count the move from `before` to `after` reached."""
    out = []
    for metric in metrics:
        for badge in rules.badges_of_metric(metric):
            assert badge.count is not None
            if actions(before, rules, metric) < badge.count <= actions(after, rules, metric):
                out.append(badge)
    return out


def reached_by_level(rules: Rules, now: Level) -> list[Badge]:
    """The level badges a member at `now` has reached (those it holds already, the store skips:
    a level left by a pin's release may have held them without earning them)."""
    return [b for b in rules.level_badges if b.level is not None and holds_level(rules, now.id, b.level)]


def met(badge: Badge, rules: Rules, points: dict[str, int], level_id: str | None) -> bool:
    """Whether a member with these figures meets an automatic badge's criterion now."""
    if badge.metric is not None and badge.count is not None:
        return actions(points, rules, badge.metric) >= badge.count
    if badge.level is not None:
        return holds_level(rules, level_id, badge.level)
    return False


def badge_ref(badge_id: str, rules: Rules) -> dict[str, str]:
    """A badge as events name it; one the rules lack (dropped by a rescore) by its id alone."""
    found = rules.badge(badge_id)
    return found.ref() if found else {"id": badge_id, "name": badge_id}


def badge_event(
    action: Literal["granted", "revoked"],
    member_id: str,
    badge: dict[str, str],
    granted_at: datetime,
    cause: dict[str, Any],
    rules_version: str,
    at: datetime,
    emitted_at: datetime,
) -> dict[str, Any]:
    """A badge granted or revoked, as published on the member-keyed topic (SPEC §10.2). Its id
    is derived from the member, the badge, the action and the time it happened, so a consumer
    can dedupe redeliveries on it (a badge revoked and granted again gives new ids)."""
    event_id = uuid.uuid5(_BADGE_EVENT_NS, f"{member_id}\x00{badge['id']}\x00{action}\x00{iso_utc(at)}")
    return {
        "event_id": str(event_id),
        "member_id": member_id,
        "action": action,
        "badge": badge,
        "granted_at": iso_utc(granted_at),
        "cause": cause,
        "rules_version": rules_version,
        "occurred_at": iso_utc(at),
        "emitted_at": iso_utc(emitted_at),
    }


def cause_of(earned: Earned) -> dict[str, Any]:
    """The cause of an automatic or ingested grant, as its event carries it."""
    cause: dict[str, Any] = {"kind": earned.cause_kind}
    if earned.cause_event_id is not None:
        cause["event_id"] = earned.cause_event_id
    return cause
