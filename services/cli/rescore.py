"""`cl rescore` (SPEC §9.1): replay every member's applied records under new rules."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import text

from services.cli.output import console
from services.common import db
from services.common.settings import Settings
from services.common.strict_json import parse_json
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import Rules, RulesError, load_rules
from shared.scoring import MemberState, apply


def rescore(
    file: Annotated[Path, typer.Argument(help="the new rules file")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would change; write nothing")] = False,
    sample: Annotated[int, typer.Option(help="members to list as a sample, and largest moves to show")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as one line of JSON")] = False,
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
    if as_json:
        print(json.dumps(summary(report, rules, sample)))
    else:
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


def _largest(report: RescoreReport, sample: int) -> list[Moved]:
    """The largest moves, active and passive together; ties in member id order."""
    return sorted(
        report.moved,
        key=lambda m: (-(abs(m.active[1] - m.active[0]) + abs(m.passive[1] - m.passive[0])), m.member_id),
    )[:sample]


def summary(report: RescoreReport, rules: Rules, sample: int) -> dict[str, Any]:
    """The report as data: what `show_report` prints, by level id."""
    changed = [m for m in report.moved if m.from_rank != m.to_rank]
    pairs: dict[tuple[int, int], int] = {}
    for m in changed:
        pairs[(m.from_rank, m.to_rank)] = pairs.get((m.from_rank, m.to_rank), 0) + 1
    return {
        "rules_version": rules.version,
        "members": report.members,
        "level_changes": len(changed),
        "moves": len(report.moved),
        "from_to": [
            {"from": rules.level_by_rank(was).id, "to": rules.level_by_rank(now).id, "members": n}
            for (was, now), n in sorted(pairs.items())
        ],
        "largest_moves": [
            {"member_id": m.member_id, "active": list(m.active), "passive": list(m.passive)}
            for m in _largest(report, sample)
        ],
        "sample": [m.member_id for m in changed[:sample]],
    }


def show_report(report: RescoreReport, rules: Rules, sample: int) -> None:
    data = summary(report, rules, sample)
    console.print(
        f"{report.members:,} members replayed under rules {rules.version}; "
        f"{data['level_changes']:,} would change level, {data['moves']:,} would change level or scores"
    )
    table = Table(title="Level changes: from → to")
    for column in ("from", "to", "members"):
        table.add_column(column)
    names = {level.id: level.name for level in rules.levels}
    for row in data["from_to"]:
        table.add_row(names[row["from"]], names[row["to"]], str(row["members"]))
    console.print(table)
    moves = Table(title="Largest score moves")
    for column in ("member", "active", "passive"):
        moves.add_column(column)
    for m in data["largest_moves"]:
        moves.add_row(m["member_id"], "{} → {}".format(*m["active"]), "{} → {}".format(*m["passive"]))
    console.print(moves)
    if data["sample"]:
        console.print("Sample: " + ", ".join(data["sample"]))
