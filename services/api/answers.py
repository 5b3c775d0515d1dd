"""What the API answers: a member rendered from its stored view (SPEC §7), and the answers
besides 200 as the OpenAPI document declares them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.common.http import error, error_doc
from shared.badges import badge_ref
from shared.programs import program_ref
from shared.rules import Level, Rules

if TYPE_CHECKING:
    from services.api.rules import RulesInForce

# What the member reads answer besides 200, for the OpenAPI document.
INVALID = error_doc("a member id, or a query parameter, is not valid")
NOT_FOUND = error_doc("no event has named this member")
GONE = error_doc("the period named is older than the API keeps (CL_PERIODS_*_KEPT)")
DOWN = error_doc("the store the answer needs is down; retry shortly", **{"Retry-After": "seconds to wait"})
NOT_MODIFIED: dict[str, Any] = {
    "description": "the member's view still matches If-None-Match",
    "headers": {"ETag": {"description": "the view's entity tag", "schema": {"type": "string"}}},
}


def ok(model: type[BaseModel]) -> dict[str, Any]:
    # The routes answer rendered bytes (for the ETag); the model only documents them.
    return {"model": model, "description": "the answer"}


def not_found(member_id: str) -> JSONResponse:
    return error(404, "not_found", f"no member {member_id!r} has been seen")


async def unavailable(request: Request, exc: Exception) -> Response:
    """A store the answer needs is down (`services.api.reads.Unavailable`): retry in a second."""
    return error(503, "unavailable", str(exc), **{"Retry-After": "1"})


async def period_refused(request: Request, exc: Exception) -> Response:
    """A board of a period the API cannot answer (`services.api.reads.PeriodRefused`)."""
    status = getattr(exc, "status", 422)
    return error(status, "gone" if status == 410 else "invalid_request", str(exc))


def level_of(level_id: str, rules: Rules, known: Mapping[str, Level]) -> Level:
    """A stored level, by id: as the rules in force have it, else as the rules it was reached
    under do (`known`: a member that a rescore to a reshaped ladder has not reached yet). A
    level no rules know (never written by the scorer) still reads, under its id."""
    return rules.find(level_id) or known.get(level_id) or Level(id=level_id, name=level_id, tier=rules.levels[0].tier)


def render(view: dict[str, Any], rules: Rules, now: datetime, known: Mapping[str, Level]) -> dict[str, Any]:
    """The API's answer for one member (SPEC §7), from a stored view (`MemberView.stored`)."""
    tenure_days = tenure(view, now)[0]
    level = level_of(view["level_id"], rules, known)
    active, passive = view["active_score"], view["passive_score"]
    following = rules.next_level(level.id)
    return {
        "member_id": view["member_id"],
        "level": level.ref(),
        "grants": list(level.held_grants),  # a pinned level's, while pinned
        "pinned": view.get("pinned"),  # views written before pins existed have none
        "active_score": active,
        "passive_score": passive,
        "tenure_days": tenure_days,
        "joined_at": view["joined_at"],
        "points": {metric: view["points"].get(metric, 0) for metric in rules.metrics},
        "next_level": following and {**following.ref(), "unmet": following.unmet(active, passive, tenure_days)},
        "updated_at": view["updated_at"],
        "programs": [program_ref(p, rules) for p in view.get("programs", [])],  # none in earlier views
        "badges": [{**badge_ref(b["id"], rules), "granted_at": b["granted_at"]} for b in view.get("badges", [])],
    }


def tenure(view: dict[str, Any], now: datetime) -> tuple[int, datetime, datetime]:
    """A member's tenure in whole days at `now`, and the instants between which it is that many
    days (from, until): it changes at the time of day the member joined, not at midnight."""
    joined_at = datetime.fromisoformat(view["joined_at"])
    days = (now - joined_at).days
    if days < 1:  # not a day yet (or joined later than now, by the clocks of two machines)
        return 0, EARLIEST, joined_at + timedelta(days=1)
    return days, joined_at + timedelta(days=days), joined_at + timedelta(days=days + 1)


EARLIEST = datetime.min.replace(tzinfo=UTC)


class Answer(NamedTuple):
    """A member rendered (`render`) as the bytes the API sends, its ETag, and the instants
    between which the same view and rules render to these bytes: the member's tenure is the
    only thing in the answer that the time changes."""

    body: bytes
    etag: str
    since: datetime
    until: datetime


class Rendered:
    """Members' answers as rendered last, by the stored view they were rendered from.

    The answer is a pure function of the view, the rules in force (with the levels of earlier
    rules, `RulesInForce.known`) and the member's tenure day, so it is kept under the view's
    own JSON bytes, all its fields whatever they are (a field added to the view changes the
    key), for the rules it was rendered under (a change of rules forgets every answer), while
    the tenure it shows holds (`Answer.since` to `until`). Rendering and hashing a member is
    most of the API's own work in a member read; many reads ask again for a member unchanged.

    At most `size` answers are kept; past that the oldest kept goes first.
    """

    def __init__(self, in_force: RulesInForce, size: int = 50_000) -> None:
        self.in_force = in_force
        self.size = size
        self._answers: dict[bytes, Answer] = {}
        self._under: tuple[Rules, Mapping[str, Level]] | None = None

    def answer(self, view: dict[str, Any], now: datetime) -> Answer:
        """The answer for this stored view at `now`, as `render` gives it."""
        rules, known = self.in_force.current, self.in_force.known
        under = self._under
        if under is None or under[0] is not rules or under[1] is not known:
            self._answers.clear()
            self._under = rules, known
        key = orjson.dumps(view)
        found = self._answers.get(key)
        if found is not None and found.since <= now < found.until:
            return found
        body = orjson.dumps(render(view, rules, now, known))
        _, since, until = tenure(view, now)
        made = Answer(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', since, until)
        if found is None and len(self._answers) >= self.size:
            del self._answers[next(iter(self._answers))]
        self._answers[key] = made
        return made
