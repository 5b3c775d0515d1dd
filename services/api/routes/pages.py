"""Pages for people (SPEC §7): the ladder, a member's page and the leaderboards, rendered on
the server.

They read members and their history through `services.api.reads`, as the JSON routes do, and
stay out of the OpenAPI document, which describes the API for programs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from services.api.answers import level_of, render
from services.api.reads import (
    PeriodRefused,
    Unavailable,
    leaderboard_page,
    level_changes,
    level_members,
    member_views,
)
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ONCE
from shared.events import MEMBER_ID
from shared.rules import Level, Rules
from shared.scoring import BoardMetric, period_start

HISTORY_PAGE = 20
BOARD_PAGE = 50
PERIODS = {"all": "of all time", "year": "this year", "month": "this month", "week": "this week"}
METRICS = {"solution_accepted": "helpful points (accepted solutions)"}  # the boards by one metric

# What each figure a level requires is called on the pages, for one and for many.
FIGURES = {
    "active_score": ("active point", "active points"),
    "passive_score": ("passive point", "passive points"),
    "tenure_days": ("day as a member", "days as a member"),
}
TIERS = {
    "passive": "Explorer levels: reached by visiting, reading, joining groups and attending events",
    "active": "Contributor levels: reached by posting, replying, commenting, publishing and liking",
}
CAUSES = {"activity": "activity", "tenure": "time as a member", "rescore": "updated rules", "override": "a moderator"}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _luminance(color: str) -> float:
    """WCAG 2's relative luminance of "#rrggbb"."""
    r, g, b = (c / 255 for c in bytes.fromhex(color[1:]))
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def look(level: Level) -> dict[str, Any]:
    """How a level's chip is drawn (SPEC §10.1): its name always, as text; its colour behind it,
    with black or white ink, whichever contrasts more (at least 4.5:1 either way, WCAG AA);
    its icon when it is a URL (an icon name is the platform's to draw, kept as `data-icon`)."""
    ink = None
    if level.color:
        lum = _luminance(level.color)
        ink = "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"
    url = level.icon if level.icon and level.icon.startswith("https://") else None
    return {
        "id": level.id,
        "name": level.name,
        "color": level.color,
        "ink": ink,
        "icon_url": url,
        "icon_name": None if url else level.icon,
    }


def grant_names(grants: tuple[str, ...] | list[str]) -> list[str]:
    """Privileges as a person reads them: "flag_posts" → "flag posts"."""
    return [g.replace("_", " ") for g in grants]


def _figure(name: str, n: int) -> str:
    return FIGURES[name][0 if n == 1 else 1]


def requirements_text(level: Level) -> str:
    """How a level is reached, in words: "50 passive points and 30 days as a member"."""
    wanted = [f"{n:,} {_figure(name, n)}" for name, n in level.requirements().items()]
    return " and ".join(wanted) or "where every member starts"


def progress(level: Level, member: dict[str, Any]) -> list[dict[str, Any]]:
    """One bar per requirement of `level`, from a member's answer (`render`)."""
    return [
        {
            "figure": name,
            "required": required,
            "current": member[name],
            "text": f"{member[name]:,} of {required:,} {_figure(name, required)}",
        }
        for name, required in level.requirements().items()
    ]


def _page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(template).render(**context), status_code=status, headers=headers)


def _unavailable(exc: Unavailable) -> HTMLResponse:
    return _page(
        "message.html",
        503,
        {"Retry-After": "1"},
        title="Please try again shortly",
        message=f"This page cannot be shown right now: {exc}.",
    )


def period_words(name: str, period: str) -> str:
    """A board's period in words: "this year", "in 2025", "in November 2026", "in week 49 of 2026"."""
    if period in PERIODS:
        return PERIODS[period]
    kind, when = name.split(":", 1)
    if kind == "year":
        return f"in {when}"
    if kind == "month":
        return f"in {period_start(name):%B %Y}"
    year, week = when.split("-W")
    return f"in week {int(week)} of {year}"


def ladder_page(rules: Rules) -> str:
    metrics = [{"name": name, **m.model_dump(), "how": rules.how(name)} for name, m in rules.metrics.items()]
    return _templates.get_template("levels.html").render(
        tiers=[
            {
                "tier": tier,
                "title": TIERS[tier],
                "levels": [
                    {
                        "look": look(lv),
                        "rank": lv.rank,
                        "requires": requirements_text(lv),
                        "description": lv.description,
                        "new_grants": grant_names(lv.grants),
                        "inherits": len(lv.held_grants) > len(lv.grants),
                    }
                    for lv in rules.levels
                    if lv.tier == tier
                ],
                "metrics": [m for m in metrics if m["tier"] == tier],
            }
            for tier in ("passive", "active")
        ],
    )


def router(in_force: RulesInForce) -> APIRouter:
    pages = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

    @pages.get("/")
    @pages.get("/levels")
    async def levels() -> HTMLResponse:
        return HTMLResponse(in_force.once("ladder page", ladder_page))

    @pages.get("/members/{member_id}", dependencies=[ONCE])
    async def member(
        request: Request,
        member_id: str,
        before: Annotated[int | None, Query(ge=1, le=2**31 - 1), DIGITS] = None,
    ) -> HTMLResponse:
        try:
            # An id no member can have is simply not found, as a person would read it.
            valid = re.fullmatch(MEMBER_ID, member_id)
            view = (await member_views(request.app.state, [member_id])).get(member_id) if valid else None
            if view is None:
                return _page(
                    "message.html",
                    404,
                    title="Member not found",
                    message=f"No activity has been recorded yet for a member with the id “{member_id}”.",
                )
            changes = await level_changes(request.app.state, member_id, before, HISTORY_PAGE)
        except Unavailable as exc:
            return _unavailable(exc)
        rules = in_force.current
        answer = render(view, rules, datetime.now(UTC), in_force.known)
        level = level_of(answer["level"]["id"], rules, in_force.known)
        following = rules.next_level(level.id)
        older = changes[-1]["seq"] if len(changes) == HISTORY_PAGE and changes[-1]["seq"] > 1 else None
        return _page(
            "member.html",
            member=answer,
            look=look(level),
            description=level.description,
            grants=grant_names(answer["grants"]),
            tier=TIERS[answer["level"]["tier"]].split(":")[0],
            next_level=following and {"id": following.id, "name": following.name, "bars": progress(following, answer)},
            history=[
                {
                    "date": change["occurred_at"][:10],
                    "at": change["occurred_at"],
                    "to": change["to_level"]["name"],
                    "from": change["from_level"] and change["from_level"]["name"],
                    "direction": "up" if change["direction"] == "promoted" else "down",
                    "cause": CAUSES.get(change["cause"]["kind"], change["cause"]["kind"]),
                    "reason": change["cause"].get("reason"),
                }
                for change in changes
            ],
            older=older,
        )

    @pages.get("/leaderboard", dependencies=[ONCE])
    async def leaderboard(
        request: Request,
        tier: Literal["active", "passive"] = "active",
        period: Annotated[str, Query(max_length=20)] = "all",
        metric: BoardMetric | None = None,
        exclude: Literal["pinned"] | None = None,
        top: Annotated[int, Query(ge=1, le=100), DIGITS] = BOARD_PAGE,
    ) -> HTMLResponse:
        try:
            board = await leaderboard_page(request.app.state, in_force, tier, period, 0, top, metric, exclude)
        except Unavailable as exc:
            return _unavailable(exc)
        except PeriodRefused as exc:
            title = "Period no longer kept" if exc.status == 410 else "No such period"
            return _page("message.html", exc.status, title=title, message=f"{str(exc).removeprefix('period: ')}.")
        over = period_words(board["period_name"], period)
        what = METRICS[metric] if metric else f"{tier} points"
        query = {"tier": tier, "period": period} | ({"metric": metric} if metric else {})
        last_year = f"year:{datetime.now(UTC).year - 1}"
        return _page(
            "leaderboard.html",
            heading=f"{'Top ' + str(top) if top != BOARD_PAGE else 'Most'} {what} {over}",
            what=what,
            tier=tier,
            metric=metric,
            period=period,
            over=over,
            exclude=exclude,
            tiers=[
                (t, urlencode({"tier": t, "period": period}), t == tier and not metric) for t in ("active", "passive")
            ],
            helpful=urlencode({"metric": "solution_accepted", "period": period}),
            periods=[(label, urlencode(query | {"period": p}), p == period) for p, label in PERIODS.items()],
            base=urlencode(query),
            last_year=urlencode({"tier": "active", "period": last_year, "exclude": "pinned", "top": 25}),
            entries=[
                e | {"look": look(level_of(e["level"]["id"], in_force.current, in_force.known))}
                for e in board["entries"]
            ],
            total=board["total"],
        )

    @pages.get("/levels/{level_id}", dependencies=[ONCE])
    async def level(request: Request, level_id: str) -> HTMLResponse:
        now = datetime.now(UTC)
        try:
            holders = await level_members(request.app.state, in_force, level_id, False, now, 0, BOARD_PAGE)
            near = await level_members(request.app.state, in_force, level_id, True, now, 0, BOARD_PAGE)
        except Unavailable as exc:
            return _unavailable(exc)
        if holders is None or near is None:
            return _page(
                "message.html", 404, title="Level not found", message=f"There is no level with the id “{level_id}”."
            )
        found = in_force.current.find(level_id)
        return _page(
            "level.html",
            level=holders["level"],
            requires=requirements_text(found) if found else "",
            holders=holders,
            near=near,
            figures=FIGURES,
        )

    return pages
