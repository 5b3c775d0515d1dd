"""The ladder: each level's requirements and how points are earned (SPEC §7)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from services.api import schemas
from services.api.rules import RulesInForce
from shared.rules import Rules


def ladder_body(rules: Rules) -> bytes:
    """`GET /v1/levels`: checked against its document, and made once per rules version."""
    ladder = {
        "rules_version": rules.version,
        "levels": [
            {
                **level.ref(),
                "requires": level.requirements(),
                "description": level.description,
                "icon": level.icon,
                "color": level.color,
                "grants": list(level.held_grants),
                "new_grants": list(level.grants),
            }
            for level in rules.levels
        ],
        "scores": {
            tier: [m for m, metric in rules.metrics.items() if metric.tier == tier] for tier in ("active", "passive")
        },
        "points": [
            {"metric": name, "how": rules.how(name), **m.model_dump(exclude={"how"})}
            for name, m in rules.metrics.items()
        ],
    }
    schemas.Ladder.model_validate(ladder)
    return orjson.dumps(ladder)


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/levels",
        summary="The ladder: each level's requirements and how points are earned",
        response_model=schemas.Ladder,
    )
    async def levels() -> Response:
        return Response(in_force.once("ladder", ladder_body), media_type="application/json")

    return api
