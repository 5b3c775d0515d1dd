"""`cl member erase` (SPEC §9.4): delete everything stored under a member's id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.table import Table

from services.cli.output import console
from services.common import db
from services.common.members import MemberCache
from services.common.settings import Settings
from services.scorer.erasure import Erased, erase_stored, erase_views

_WHAT = {
    "members": "state",
    "member_facts": "facts",
    "activity": "applied records",
    "level_changes": "level changes",
    "member_periods": "period points",
    "pin_audit": "pin audit entries",
}


def erase(
    member_id: Annotated[str, typer.Argument(help="the member to erase")],
    operator: Annotated[
        str, typer.Option(help="who erases (shown in the report; not stored: a record would keep the id)")
    ],
    wait: Annotated[float, typer.Option(help="seconds to wait for views on their way to Redis")] = 30.0,
) -> None:
    """Erase a member: their state, facts, applied records, level history, period points and pin
    audit in PostgreSQL, their view and leaderboard places in Redis; a tombstone goes out on the
    level-changes topic. Points other members earned from their likes stay, with a digest in
    place of the id. Safe to run again; later events for the id start a new member."""
    erased, redis_problem = asyncio.run(run(Settings(), member_id, wait))
    show(member_id, operator, erased)
    if redis_problem:
        console.print(
            f"[red]Redis could not be cleaned ({redis_problem}): the member's view and leaderboard places may"
            " remain. PostgreSQL is erased; run this command again once Redis answers.[/red]"
        )
        raise typer.Exit(1)


async def run(settings: Settings, member_id: str, wait_s: float) -> tuple[Erased, str | None]:
    """Erase the member in PostgreSQL, then in Redis; with what kept Redis from being cleaned."""
    engine = db.engine(settings.database_url, "cl-erase")
    redis = Redis.from_url(settings.redis_url, client_name="cl-erase", socket_timeout=10, socket_connect_timeout=5)
    try:
        erased = await erase_stored(engine, member_id, datetime.now(UTC))
        try:
            await erase_views(engine, MemberCache(redis, settings.redis_prefix), member_id, erased, wait_s)
        except (RedisError, OSError) as exc:
            return erased, type(exc).__name__
        return erased, None
    finally:
        await redis.aclose()
        await engine.dispose()


def show(member_id: str, operator: str, erased: Erased) -> None:
    if not erased.stored:
        console.print(f"Nothing was stored in PostgreSQL for {member_id}.")
    else:
        table = Table(title=f"Erased {member_id} (by {operator})")
        for column in ("what", "rows"):
            table.add_column(column)
        for name, what in _WHAT.items():
            table.add_row(f"{what} ({name})", str(erased.deleted.get(name, 0)))
        table.add_row("other members' facts now holding a digest", str(erased.digested_facts))
        table.add_row("other members' records now holding a digest", str(erased.digested_records))
        console.print(table)
        if erased.others:
            console.print(f"{erased.others} other members keep the points they earned from this member.")
    if erased.redis_removed is not None:
        console.print(f"Redis: {erased.redis_removed} entries removed (the member's view and leaderboard places).")
    if not erased.redis_confirmed:
        console.print(
            "[yellow]Views written before the erasure were still on their way to Redis (is a scorer running?);"
            " run this command again once the scorers have caught up, to be sure none came back.[/yellow]"
        )
    console.print(
        "A tombstone for the member is in the outbox: the scorer's relay publishes it on the level-changes topic."
        " The activity topic keeps the raw events until its retention ends."
    )
