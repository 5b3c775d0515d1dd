"""`cl member …` (SPEC §9.3, §9.4): one member's level and data."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli.output import console
from services.cli.rules import in_force
from services.common import db
from services.common.members import MemberCache
from services.common.settings import Settings
from services.write.rules import RulesBook
from services.write.unit_of_work import Committed, UnitOfWork, UnknownMember
from services.write.views import Views
from shared.rules import Level, Rules
from shared.scoring import Pin

app = typer.Typer(no_args_is_help=True, help="One member: pin or release a level, erase.")

Operator = Annotated[
    str | None,
    typer.Option(
        "--operator", envvar="CL_OPERATOR", help="who does this, for the audit log (or CL_OPERATOR)", show_default=False
    ),
]


@app.command("pin")
def pin(
    member_id: Annotated[str, typer.Argument(help="the member")],
    level: Annotated[str, typer.Argument(help="the level to hold: its id (new_member) or rank (1)")],
    reason: Annotated[str, typer.Option(help="why: the member's page and the level change show it")],
    operator: Operator = None,
    until: Annotated[
        str | None,
        typer.Option(help="when the pin ends by itself: 2026-12-31 (midnight UTC), or a time 2026-12-31T18:00Z"),
    ] = None,
) -> None:
    """Hold a member's level whatever their scores do (a spammer at New Member, staff shown as a
    Boss), until released or until --until. A level change (cause override) when the level moves."""
    who = _operator(operator)
    settings = Settings()
    rules = asyncio.run(in_force(settings))
    held = Pin(_level(rules, level).id, _reason(reason), _until(until) if until else None)
    now = datetime.now(UTC)
    done = _run(settings, lambda work: work.pin(member_id, held, who, now))
    assert done is not None and done.rules is not None
    shown = done.rules.level(held.level).name
    ends = f" until {held.until.isoformat()}" if held.until else ""
    moved = "; level changed" if done.changes else "; the level was already that"
    console.print(f"{member_id} pinned at {shown}{ends} by {who}{moved}")


@app.command("unpin")
def unpin(
    member_id: Annotated[str, typer.Argument(help="the member")],
    operator: Operator = None,
    reason: Annotated[str, typer.Option(help="why, for the audit log and the level change")] = "pin released",
) -> None:
    """Release a member's pinned level: it follows their scores and tenure again (a level change,
    cause override, when that moves it)."""
    who = _operator(operator)
    settings = Settings()
    why = _reason(reason)
    now = datetime.now(UTC)
    done = _run(settings, lambda work: work.unpin(member_id, why, who, now))
    if done is None:
        console.print(f"{member_id} is not pinned; nothing changed")
        return
    state = done.states[member_id]
    assert state.level is not None and done.rules is not None
    moved = "; level changed" if done.changes else "; the level stays"
    console.print(f"{member_id} released by {who}: {done.rules.level(state.level).name}{moved}")


def _operator(given: str | None) -> str:
    if not given or not given.strip():
        console.print("[red]say who you are, for the audit log: --operator NAME, or set CL_OPERATOR[/red]")
        raise typer.Exit(2)
    return given.strip()


def _reason(given: str) -> str:
    if not given.strip():
        console.print("[red]--reason must say why[/red]")
        raise typer.Exit(2)
    return given.strip()


def _level(rules: Rules, given: str) -> Level:
    """A level of the rules in force, by its id or its rank in their ladder (a pin keeps the id)."""
    for level in rules.levels:
        if given in (level.id, str(level.rank)):
            return level
    console.print(f"[red]no level {given!r}: give an id or a rank of the ladder ({rules.levels[0].id}, 1, …)[/red]")
    raise typer.Exit(2)


def _until(given: str) -> datetime:
    try:
        at = datetime.fromisoformat(given)
    except ValueError:
        console.print(f"[red]--until {given!r} is not a date (2026-12-31) or a time (2026-12-31T18:00Z)[/red]")
        raise typer.Exit(2) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _run(settings: Settings, operation: Callable[[UnitOfWork], Awaitable[Committed | None]]) -> Committed | None:
    """Run one of the scorer's transactions, then write the member's view to Redis at once (the
    scorer's repair loop would, a few seconds later). A refused operation exits with 1."""
    try:
        return asyncio.run(_apply(settings, operation))
    except (UnknownMember, ValueError) as exc:
        console.print(f"[red]{exc}; nothing changed[/red]")
        raise typer.Exit(1) from None


async def _apply(
    settings: Settings, operation: Callable[[UnitOfWork], Awaitable[Committed | None]]
) -> Committed | None:
    engine = db.engine(settings.database_url, "cl-member")
    try:
        # The group and topic name the scorer's offsets, which these transactions do not move.
        done = await operation(UnitOfWork(engine, settings.rules, "cl", settings.topic_activity))
        if done is not None and done.pending is not None:
            await _publish(settings, engine, done)
    finally:
        await engine.dispose()
    return done


async def _publish(settings: Settings, engine: AsyncEngine, done: Committed) -> None:
    redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    views = Views(
        engine, redis, MemberCache(redis, settings.redis_prefix), RulesBook(settings.rules), timedelta(0), timedelta(0)
    )
    try:
        await views.publish(done)
    finally:
        await redis.aclose()
    if not views.written:
        console.print("[yellow]Redis not written: the API shows the change once the scorer repairs it[/yellow]")
        return
    await views.drop_written()
