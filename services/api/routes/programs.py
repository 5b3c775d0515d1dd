"""Programmes (SPEC §11): each with its next intake, who is eligible on a date (from the level
history) and who of them is enrolled; and the programmes page."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api import repository as repo
from services.api import schemas
from services.api.answers import DOWN, level_of, ok
from services.api.reads import DB_ERRORS, Unavailable
from services.api.routes.pages import _page, _unavailable
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ISO_DAY, ONCE
from services.common import history
from services.common.http import error, error_doc
from shared.events import MEMBER_ID
from shared.programs import day_end, eligible_level, next_intake, open_intake, qualifying_ids, window_closes
from shared.rules import Program, Rules

# Candidates read per round while filling a page: most of them are eligible (they reached the level).
CHUNK = 500
UNKNOWN = error_doc("no programme has that id in the rules in force")
BAD_QUERY = error_doc("as_of is not a date (YYYY-MM-DD), or another query parameter is not valid")


def describe(program: Program, rules: Rules, today: date, enrolled: int) -> dict[str, Any]:
    """A programme as `GET /v1/programs` answers it: its window open today, if any, and its next intake."""
    intake = open_intake(program, today)
    return {
        **program.ref(),
        "min_level": rules.level(program.min_level).ref(),
        "intakes": list(program.intakes),
        "window_days": program.window_days,
        "pinned_counts": program.pinned_counts,
        "open_window": intake and {"intake": intake.isoformat(), "closes": window_closes(program, intake).isoformat()},
        "next_intake": next_intake(program, today).isoformat(),
        "enrolled": enrolled,
    }


async def _described(request: Request, rules: Rules) -> dict[str, Any]:
    try:
        async with request.app.state.engine.connect() as conn:
            counts = await repo.enrolled_counts(conn)
    except DB_ERRORS as exc:
        raise Unavailable("the programmes are unavailable; retry shortly") from exc
    today = datetime.now(UTC).date()
    return {
        "today": today.isoformat(),
        "programs": [describe(p, rules, today, counts.get(p.id, 0)) for p in rules.programs],
    }


async def eligible_page(
    conn: AsyncConnection, program: Program, in_force: RulesInForce, as_of: date, after: str, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Members eligible on `as_of`, after `after` in id order, up to `limit`; and the id to
    page after when more may follow. Only members whose history reached a qualifying level
    are read (by the level-change index), then judged by `shared.programs`."""
    rules, end = in_force.current, day_end(as_of)
    levels = qualifying_ids(program, rules, in_force.known)
    found: list[tuple[str, Any]] = []
    more = True
    while more and len(found) < limit:
        chunk = await history.reached(conn, levels, end, after, CHUNK)
        more = len(chunk) == CHUNK
        read = await history.histories(conn, chunk, end)
        for member in chunk:
            after = member
            if step := eligible_level(program, rules, *read[member], as_of):
                found.append((member, step))
                if len(found) == limit:
                    more = more or member != chunk[-1]
                    break
    enrolled = await repo.enrolled_among(conn, program.id, [m for m, _ in found])
    members = [
        {
            "member_id": m,
            "level": level_of(step.level_id, rules, in_force.known).ref(),
            "reached_at": step.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "enrolled": m in enrolled,
        }
        for m, step in found
    ]
    return members, (found[-1][0] if more and found else None)


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/programs",
        summary="The programmes, each with its next intake and whether a window is open",
        responses={200: ok(schemas.Programs), 503: DOWN},
    )
    async def programs(request: Request) -> Response:
        return Response(orjson.dumps(await _described(request, in_force.current)), media_type="application/json")

    @api.get(
        "/v1/programs/{program_id}/eligible",
        dependencies=[ONCE],
        summary="The members eligible for a programme on a date (their earned level then), with who is enrolled",
        responses={200: ok(schemas.Eligible), 404: UNKNOWN, 422: BAD_QUERY, 503: DOWN},
    )
    async def eligible(
        request: Request,
        program_id: Annotated[str, Path(max_length=64, examples=["community_boss"])],
        as_of: Annotated[
            date | None, Query(description="the day (UTC), YYYY-MM-DD; today if not given"), ISO_DAY
        ] = None,
        after: Annotated[str | None, Query(pattern=MEMBER_ID, description="the member id to page after")] = None,
        limit: Annotated[int, Query(ge=1, le=500), DIGITS] = 100,
    ) -> Response:
        rules = in_force.current
        program = rules.program(program_id)
        if program is None:
            return error(404, "not_found", f"no programme {program_id!r} in the rules in force ({rules.version})")
        day = as_of or datetime.now(UTC).date()
        try:
            async with request.app.state.engine.connect() as conn:
                members, next_after = await eligible_page(conn, program, in_force, day, after or "", limit)
        except DB_ERRORS as exc:
            raise Unavailable("the level history is unavailable; retry shortly") from exc
        body = {"program": program.ref(), "as_of": day.isoformat(), "members": members, "next_after": next_after}
        return Response(orjson.dumps(body), media_type="application/json")

    return api


def pages(in_force: RulesInForce) -> APIRouter:
    """The programmes page, for people."""
    page = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

    @page.get("/programs")
    async def programs(request: Request) -> HTMLResponse:
        try:
            described = await _described(request, in_force.current)
        except Unavailable as exc:
            return _unavailable(exc)
        return _page("programs.html", **described)

    return page
