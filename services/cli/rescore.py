"""`cl rescore` (SPEC §9.1): replay every member's applied records under new rules."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from redis.asyncio import Redis
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import text

from services.cli.output import console
from services.common import db
from services.common.members import MemberCache
from services.common.settings import Settings
from services.common.strict_json import parse_json
from services.scorer import repository as repo
from services.scorer import rulebook
from services.scorer.unit_of_work import UnitOfWork, WrongRules
from services.scorer.views import Views
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import Rules, RulesError, load_rules
from shared.scoring import LevelChange, MemberState, apply


def rescore(
    file: Annotated[Path, typer.Argument(help="the new rules file")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would change; write nothing")] = False,
    apply_rules: Annotated[
        bool, typer.Option("--apply", help="put the rules in force and rescore every member under them")
    ] = False,
    sample: Annotated[int, typer.Option(help="members to list as a sample, and largest moves to show")] = 10,
    chunk: Annotated[int, typer.Option(min=1, help="with --apply: members rescored in one transaction")] = 500,
) -> None:
    """Replay every member's applied records, in their original order, under new rules: report
    what would change (--dry-run), or make the change (--apply)."""
    if dry_run == apply_rules:
        console.print("[red]give one of --dry-run and --apply[/red]")
        raise typer.Exit(2)
    try:
        rules = load_rules(file)
    except RulesError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if dry_run:
        report = asyncio.run(dry_run_report(Settings(), rules))
        show_report(report, rules, sample)
        return
    try:
        rescored, changes = asyncio.run(apply_everywhere(Settings(), rules, chunk))
    except (RulesError, Superseded) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"rules {rules.version} in force; {rescored:,} members rescored, {len(changes):,} of them changed level"
    )
    show_changes(changes, rules)


@dataclass
class Moved:
    member_id: str
    from_rank: int
    to_rank: int
    active: tuple[int, int]  # now, under the new rules
    passive: tuple[int, int]


@dataclass
class RescoreReport:
    members: int = 0
    moved: list[Moved] = field(default_factory=list)  # every member whose level or scores would change


async def dry_run_report(settings: Settings, rules: Rules) -> RescoreReport:
    """Stream the applied records member by member (in application order) and replay each
    member from an empty state with the same pure scoring code the scorer runs."""
    engine = db.engine(settings.database_url, "cl-rescore")
    now, report = datetime.now(UTC), RescoreReport()
    try:
        async with engine.connect() as conn:
            stored = {
                row[0]: row[1:]
                for row in await conn.execute(
                    text("SELECT member_id, level_rank, active_score, passive_score FROM members")
                )
            }
            rows = await conn.stream(text("SELECT member_id, event::text FROM activity ORDER BY member_id, position"))
            state: MemberState | None = None
            with Progress(TextColumn("replaying"), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task("members", total=len(stored))
                async for member_id, raw in rows:
                    if state is None or state.member_id != member_id:
                        if state is not None:
                            _compare(report, state, stored, rules)
                            bar.advance(task)
                        state = MemberState(member_id)
                    event = ActivityEvent.model_validate(parse_json(raw.encode()))
                    apply(state, ActivityRecord(member_id, event), now, rules)
                if state is not None:
                    _compare(report, state, stored, rules)
                    bar.advance(task)
    finally:
        await engine.dispose()
    return report


def _compare(report: RescoreReport, state: MemberState, stored: dict[str, Any], rules: Rules) -> None:
    report.members += 1
    if state.member_id not in stored or state.level is None:
        return
    rank, active, passive = stored[state.member_id]
    new_active, new_passive = state.scores(rules)
    if (rank, active, passive) != (state.level, new_active, new_passive):
        report.moved.append(Moved(state.member_id, rank, state.level, (active, new_active), (passive, new_passive)))


def show_report(report: RescoreReport, rules: Rules, sample: int) -> None:
    changed = [m for m in report.moved if m.from_rank != m.to_rank]
    console.print(
        f"{report.members:,} members replayed under rules {rules.version}; "
        f"{len(changed):,} would change level, {len(report.moved):,} would change level or scores"
    )
    pairs: dict[tuple[int, int], int] = {}
    for m in changed:
        pairs[(m.from_rank, m.to_rank)] = pairs.get((m.from_rank, m.to_rank), 0) + 1
    table = Table(title="Level changes: from → to")
    for column in ("from", "to", "members"):
        table.add_column(column)
    for (was, now), n in sorted(pairs.items()):
        table.add_row(rules.level_by_rank(was).name, rules.level_by_rank(now).name, str(n))
    console.print(table)
    moves = Table(title="Largest score moves")
    for column in ("member", "active", "passive"):
        moves.add_column(column)
    biggest = sorted(report.moved, key=lambda m: -(abs(m.active[1] - m.active[0]) + abs(m.passive[1] - m.passive[0])))
    for m in biggest[:sample]:
        moves.add_row(m.member_id, f"{m.active[0]} → {m.active[1]}", f"{m.passive[0]} → {m.passive[1]}")
    console.print(moves)
    if changed:
        console.print("Sample: " + ", ".join(m.member_id for m in changed[:sample]))


class Superseded(Exception):
    """Other rules were put in force while this rescore ran."""


async def apply_everywhere(settings: Settings, rules: Rules, chunk: int) -> tuple[int, list[LevelChange]]:
    """Put `rules` in force, then rescore every member still under other rules, a chunk of
    members (in id order) a transaction, until none is left. The scorer scores under the rules
    in force from its next transaction on, rescoring first any member it meets that is not
    rescored yet, so no record counts under both rules. Interrupted, it is run again: the
    members rescored stay so, and it goes on with the others."""
    engine = db.engine(settings.database_url, "cl-rescore")
    redis = Redis.from_url(settings.redis_url)
    work = UnitOfWork(engine, settings.rules, "", "")
    views = Views(engine, redis, MemberCache(redis, settings.redis_prefix), work.book, timedelta(0), timedelta(0))
    rescored, changes = 0, []
    try:
        async with engine.begin() as conn:
            await work.book.in_force(conn)  # seeded from CL_RULES_PATH on a database that has none
            await rulebook.record(conn, rules)
            await repo.put_rules_in_force(conn, rules.version)  # waits for transactions under the old rules
        async with engine.connect() as conn:
            total = await repo.count_behind(conn, rules.version)
        columns = (TextColumn("rescoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}/s"))
        with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("members", total=total, rate="–")
            started = time.monotonic()
            while True:  # again from the start: the scorer may have added members meanwhile
                after, behind = "", 0
                while True:
                    async with engine.connect() as conn:
                        ids = await repo.members_behind(conn, rules.version, after, chunk)
                    if not ids:
                        break
                    written = list(views.written)
                    try:
                        done = await work.rescore(ids, rules.version, datetime.now(UTC), written)
                    except WrongRules as exc:
                        raise Superseded(f"{exc}: this rescore stopped; the later one rescores every member") from None
                    views.deleted(written)
                    await views.publish(done)
                    rescored, behind, after = rescored + len(done.states), behind + len(ids), ids[-1]
                    changes += done.changes
                    bar.update(task, completed=rescored, rate=f"{rescored / (time.monotonic() - started):,.0f}")
                if not behind:
                    break
            async with engine.begin() as conn:  # the views are in Redis: their notes can go
                await repo.drop_pending_views(conn, sorted(views.written))
    finally:
        await redis.aclose()
        await engine.dispose()
    return rescored, changes


def show_changes(changes: list[LevelChange], rules: Rules) -> None:
    pairs: dict[tuple[int, int], int] = {}
    for c in changes:
        if c.from_rank is not None:
            pairs[(c.from_rank, c.to_rank)] = pairs.get((c.from_rank, c.to_rank), 0) + 1
    table = Table(title="Level changes: from → to")
    for column in ("from", "to", "members"):
        table.add_column(column)
    for (was, now), n in sorted(pairs.items()):
        table.add_row(rules.level_by_rank(was).name, rules.level_by_rank(now).name, str(n))
    console.print(table)
