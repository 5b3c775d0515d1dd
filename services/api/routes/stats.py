"""Counts over all members: per level and tier, recent level changes, records applied (SPEC §7)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.api import repository as repo
from services.api import schemas
from services.api.answers import DOWN, ok
from services.api.reads import DB_ERRORS, Unavailable
from services.api.rules import RulesInForce


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/stats",
        summary="Members per level and tier, recent level changes, records applied",
        responses={200: ok(schemas.Stats), 503: DOWN},
    )
    async def stats(request: Request) -> Response:
        try:
            async with request.app.state.engine.connect() as conn:
                levels, hours = await repo.stats(conn)
                promoted = await repo.promotions(conn)
        except DB_ERRORS as exc:
            raise Unavailable("the stats are unavailable; retry shortly") from exc
        rules = in_force.current
        by_level = [
            {**level.ref(), "members": levels.get(level.id, 0), "promoted_last_30d": promoted.get(level.id, 0)}
            for level in rules.levels
        ]
        by_tier = {
            tier: sum(levels.get(level.id, 0) for level in rules.levels if level.tier == tier)
            for tier in ("passive", "active")
        }

        def changes(window: int) -> dict[str, int]:
            return {what: hours.get(what, (0, 0))[window] for what in ("promoted", "demoted")}

        body = {
            "members": sum(by_tier.values()),
            "by_level": by_level,
            "by_tier": by_tier,
            "level_changes": {"last_24h": changes(0), "last_7d": changes(1)},
            "records_applied_last_24h": hours.get("applied", (0, 0))[0],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return api
