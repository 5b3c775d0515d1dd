"""`cl rules check`, `cl rescore --dry-run` (SPEC §9.1) and `cl backfill` (SPEC §9.2). Built
on typer, with rich for tables and progress; they use the services' settings (CL_* variables)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import text

from services.common import db
from services.common.kafka import ensure_topics
from services.common.kafka import producer as make_producer
from services.common.settings import Settings
from services.common.strict_json import parse_json
from shared.events import ActivityEvent, ActivityRecord, shown, validate_event
from shared.rules import Rules, RulesError, load_rules
from shared.scoring import MemberState, apply

app = typer.Typer(no_args_is_help=True, help="Operate Community Levels (SPEC §9).")
rules_app = typer.Typer(no_args_is_help=True, help="Rules files.")
app.add_typer(rules_app, name="rules")
console = Console()
BATCH = 1000  # records sent before waiting for Kafka's acknowledgements


@rules_app.command("check")
def rules_check(file: Annotated[Path, typer.Argument(help="the rules file to check")]) -> None:
    """Validate a rules file and show how it differs from the rules in force (CL_RULES_PATH)."""
    try:
        new = load_rules(file)
    except RulesError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    differences = rules_differences(Settings().rules, new)
    if not differences:
        console.print(f"{file} is valid and the same as the rules in force (version {new.version}).")
        return
    table = Table(title=f"{file} is valid; what it changes")
    for column in ("what", "in force", "in the file"):
        table.add_column(column)
    for row in differences:
        table.add_row(*row)
    console.print(table)


def rules_differences(old: Rules, new: Rules) -> list[tuple[str, str, str]]:
    """(what, in force, in the file) for each setting that differs."""
    rows = []
    if old.version != new.version:
        rows.append(("version", old.version, new.version))
    for name in old.metrics:
        before, after = old.metrics[name].model_dump(), new.metrics[name].model_dump()
        rows += [(f"{name}.{k}", str(before[k]), str(after[k])) for k in before if before[k] != after[k]]
    old_levels = {level.id: level for level in old.levels}
    new_levels = {level.id: level for level in new.levels}
    for level_id in [*old_levels, *(i for i in new_levels if i not in old_levels)]:
        if level_id not in old_levels or level_id not in new_levels:
            where = ("absent", "present") if level_id in new_levels else ("present", "absent")
            rows.append((f"level {level_id}", *where))
            continue
        was, now = old_levels[level_id].model_dump(), new_levels[level_id].model_dump()
        rows += [(f"level {level_id}.{k}", str(was[k]), str(now[k])) for k in was if was[k] != now[k]]
    return rows


@app.command()
def backfill(
    file: Annotated[Path, typer.Argument(help="activity events, one JSON object a line (SPEC §3)")],
    skip_invalid: Annotated[bool, typer.Option(help="publish the valid lines even if some are not")] = False,
) -> None:
    """Import a history: every line is validated as ingest validates an event, then published
    to the activity topic as ingest publishes it. Nothing is published from a file with an
    invalid line unless --skip-invalid. Running it again changes nothing (event ids repeat)."""
    problems = [(number, reason) for number, reason in read_events(file) if isinstance(reason, str)]
    for line, reason in problems[:50]:
        console.print(f"line {line}: {reason}")
    if len(problems) > 50:
        console.print(f"… and {len(problems) - 50} more invalid lines")
    if problems and not skip_invalid:
        console.print(
            f"[red]{len(problems)} invalid lines; nothing was published (--skip-invalid publishes the rest)[/red]"
        )
        raise typer.Exit(1)
    # A second reading publishes, so memory does not grow with the file.
    events, records = asyncio.run(publish(Settings(), file))
    console.print(f"{events:,} events published as {records:,} records; {len(problems):,} lines skipped")


def read_events(file: Path) -> Iterator[tuple[int, ActivityEvent | str]]:
    """Each line's number with its event, or with the reason it is invalid (blank lines skipped)."""
    now = datetime.now(UTC)
    with file.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw: Any = parse_json(line)
            except ValueError as exc:  # UnicodeDecodeError included
                yield number, f"not JSON this system reads: {shown(str(exc))}"
                continue
            result = validate_event(raw, now)
            if isinstance(result, list):
                yield number, "; ".join(f"{field}: {reason}" for field, reason in result)
            else:
                yield number, result


async def publish(settings: Settings, file: Path) -> tuple[int, int]:
    """Publish the file's valid events, one record per member each changes, keyed by that
    member (as ingest does); returns how many events and records."""
    await ensure_topics(settings)
    producer = make_producer(settings, "cl-backfill")
    await producer.start()
    events = records = 0
    columns = (TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} events/s"))
    try:
        with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
            with file.open("rb") as counted:
                lines = sum(1 for _ in counted)
            task = progress.add_task("backfill", total=lines, rate="–")
            started, acks = time.monotonic(), []
            for number, event in read_events(file):
                if isinstance(event, ActivityEvent):
                    value = event.to_json()
                    for subject in event.subjects():
                        acks.append(await producer.send(settings.topic_activity, value, key=subject.encode()))
                    events += 1
                if len(acks) >= BATCH:
                    await asyncio.gather(*acks)
                    records, acks = records + len(acks), []
                    progress.update(task, completed=number, rate=f"{events / (time.monotonic() - started):,.0f}")
            await asyncio.gather(*acks)
            records += len(acks)
            progress.update(task, completed=lines)
    finally:
        await producer.stop()
    return events, records


@app.command()
def rescore(
    file: Annotated[Path, typer.Argument(help="the new rules file")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would change; write nothing")] = False,
    sample: Annotated[int, typer.Option(help="members to list as a sample, and largest moves to show")] = 10,
) -> None:
    """Replay every member's applied records, in their original order, under new rules, and
    report what would change. Only --dry-run exists yet: applying is not built."""
    if not dry_run:
        console.print("[red]only --dry-run is available: applying a rescore is not built yet[/red]")
        raise typer.Exit(2)
    try:
        rules = load_rules(file)
    except RulesError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    report = asyncio.run(dry_run_report(Settings(), rules))
    show_report(report, rules, sample)


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
