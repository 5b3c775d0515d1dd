"""Badges (SPEC §10.2): the catalogue of the rules in force, how each is earned and how many
members hold it; and the badges page."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.api import repository as repo
from services.api import schemas
from services.api.answers import DOWN, ok
from services.api.reads import DB_ERRORS, Unavailable
from services.api.routes.pages import _page, _unavailable
from services.api.rules import RulesInForce
from shared.rules import Badge, Rules


def describe(badge: Badge, rules: Rules, holders: int) -> dict[str, Any]:
    """A badge as `GET /v1/badges` answers it."""
    return {
        **badge.ref(),
        "description": badge.description,
        "icon": badge.icon,
        "link": badge.link,
        "manual": badge.manual,
        "how": rules.badge_how(badge),
        "metric": badge.metric,
        "count": badge.count,
        "level": rules.level(badge.level).ref() if badge.level else None,
        "holders": holders,
    }


async def catalogue(request: Request, rules: Rules) -> dict[str, Any]:
    try:
        async with request.app.state.engine.connect() as conn:
            holders = await repo.badge_holders(conn)
    except DB_ERRORS as exc:
        raise Unavailable("the badges are unavailable; retry shortly") from exc
    return {"rules_version": rules.version, "badges": [describe(b, rules, holders.get(b.id, 0)) for b in rules.badges]}


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/badges",
        summary="The badge catalogue: how each badge is earned and how many members hold it",
        responses={200: ok(schemas.Badges), 503: DOWN},
    )
    async def badges(request: Request) -> Response:
        return Response(orjson.dumps(await catalogue(request, in_force.current)), media_type="application/json")

    return api


def pages(in_force: RulesInForce) -> APIRouter:
    """The badges page, for people."""
    page = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

    @page.get("/badges")
    async def badges(request: Request) -> HTMLResponse:
        try:
            found = await catalogue(request, in_force.current)
        except Unavailable as exc:
            return _unavailable(exc)
        return _page("badges.html", **found)

    return page
