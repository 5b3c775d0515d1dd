"""What the API answers: a member rendered from its stored view (SPEC §7), and the answers
besides 200 as the OpenAPI document declares them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.common.http import error, error_doc
from shared.badges import badge_ref
from shared.programs import program_ref
from shared.rules import Level, Rules

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
    joined_at = datetime.fromisoformat(view["joined_at"])
    tenure_days = max(0, (now - joined_at).days)
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
