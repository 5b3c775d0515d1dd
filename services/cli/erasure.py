"""`cl member erase` (SPEC §9.4): delete everything stored under a member's id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.table import Table

from services.cli.output import console
from services.common import db
from services.common.kafka import client_options
from services.common.members import MemberCache
from services.common.settings import Settings
from services.write.erasure import Ends, Erased, erase_stored, erase_views

_WHAT = {
    "members": "state",
    "member_facts": "facts",
    "activity": "applied records",
    "level_changes": "level changes",
    "member_periods": "period points",
    "pin_audit": "pin audit entries",
    "program_enrolments": "programme enrolments",
    "program_audit": "programme audit entries",
    "member_badges": "badges",
    "badge_audit": "badge audit entries",
}


def erase(
    member_id: Annotated[str, typer.Argument(help="the member to erase")],
    operator: Annotated[
        str, typer.Option(help="who erases (shown in the report; not stored: a record would keep the id)")
    ],
) -> None:
    """Erase a member: their state, facts, applied records, level history, period points and pin
    audit in PostgreSQL, their view and leaderboard places in Redis; a tombstone goes out on the
    level-changes topic. Points other members earned from their likes stay, with a digest in
    place of the id. Records sent before the erasure and applied after it (a partition that
    lags) are erased as they are applied. Safe to run again; events sent later for the id
    start a new member."""
    settings = Settings()
    try:
        ends = asyncio.run(activity_ends(settings))
    except KafkaError as exc:
        console.print(
            f"[red]Kafka could not be asked where the activity topic ends ({type(exc).__name__}): nothing was"
            " erased. Run this command again once Kafka answers.[/red]"
        )
        raise typer.Exit(1) from None
    erased, redis_problem = asyncio.run(run(settings, member_id, ends))
    show(member_id, operator, erased)
    if redis_problem:
        console.print(
            f"[red]Redis could not be cleaned ({redis_problem}): the member's view and leaderboard places may"
            " remain. PostgreSQL is erased; run this command again once Redis answers.[/red]"
        )
        raise typer.Exit(1)


async def activity_ends(settings: Settings) -> Ends:
    """Where each partition of the activity topic ends now: the records below were sent before
    the erasure, and those the scorer has not applied yet are erased as it applies them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **client_options(settings),
        client_id="cl-erase",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        topic = settings.topic_activity
        partitions = sorted(consumer.partitions_for_topic(topic) or ()) if topic in await consumer.topics() else []
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions]) if partitions else {}
        offsets = [0] * (max(partitions) + 1 if partitions else 0)
        for tp, end in ends.items():
            offsets[tp.partition] = end
        return Ends(topic, offsets)
    finally:
        await consumer.stop()


async def run(settings: Settings, member_id: str, ends: Ends) -> tuple[Erased, str | None]:
    """Erase the member in PostgreSQL, then in Redis; with what kept Redis from being cleaned."""
    engine = db.engine(settings.database_url, "cl-erase")
    redis = Redis.from_url(settings.redis_url, client_name="cl-erase", socket_timeout=10, socket_connect_timeout=5)
    try:
        erased = await erase_stored(engine, member_id, datetime.now(UTC), ends)
        try:
            await erase_views(MemberCache(redis, settings.redis_prefix), member_id, erased)
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
    console.print(
        "A tombstone for the member is in the outbox: the scorer's relay publishes it on the level-changes topic."
        " Records sent before now and not yet applied are erased as the scorer applies them."
        " The activity topic keeps the raw events until its retention ends."
    )
