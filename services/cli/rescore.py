"""`cl rescore` (SPEC §9.1): replay every member's applied records under new rules."""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import total_ordering
from pathlib import Path
from typing import Annotated, Any

import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from services.cli.output import console
from services.common import db
from services.common.members import MemberCache
from services.common.settings import Settings
from services.write import replay
from services.write.replay import Replayed
from services.write.rules import PinsOutside, put_in_force
from services.write.unit_of_work import UnitOfWork, WrongRules
from services.write.views import Views
from shared.programs import below_programs
from shared.rules import Rules, RulesError, load_rules
from shared.scoring import LevelChange


def rescore(
    file: Annotated[Path, typer.Argument(help="the new rules file")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would change; write nothing")] = False,
    apply_rules: Annotated[
        bool, typer.Option("--apply", help="put the rules in force and rescore every member under them")
    ] = False,
    sample: Annotated[int, typer.Option(help="members to list as a sample, and largest moves to show")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="with --dry-run: the report as one line of JSON")] = False,
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
        report = asyncio.run(dry_run_report(Settings(), rules, sample))
        if as_json:
            print(json.dumps(summary(report, rules, sample)))
        else:
            show_report(report, rules, sample)
        return
    try:
        done = asyncio.run(apply_everywhere(Settings(), rules, chunk))
    except RulesError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except WrongRules as exc:
        console.print(f"[red]{exc}: this rescore stopped; the later one rescores every member[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"rules {rules.version} in force; {done.rescored:,} members rescored, {done.changed:,} of them changed level"
    )
    console.print(from_to_table(done.pairs, rules, done.names))
    if done.below:
        console.print(below_note(done.below))
    console.print(
        badges_note(
            {b: n for b, n in done.badges.items() if n > 0}, {b: -n for b, n in done.badges.items() if n < 0}, "were"
        )
    )


@dataclass(slots=True)
class Moved:
    member_id: str
    from_level: str  # ids: the level now (under the rules in force), and under the new rules
    to_level: str
    active: tuple[int, int]  # now, under the new rules
    passive: tuple[int, int]

    @property
    def size(self) -> int:
        """The move, active and passive together."""
        return abs(self.active[1] - self.active[0]) + abs(self.passive[1] - self.passive[0])


@total_ordering
class _Earlier:
    """A member id that ranks higher the earlier it sorts: ties between equal moves go to the
    first member id."""

    __slots__ = ("member_id",)

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Earlier) and self.member_id == other.member_id

    def __lt__(self, other: _Earlier) -> bool:
        return self.member_id > other.member_id


@dataclass
class RescoreReport:
    """What the new rules would change. Its size does not grow with the members: counts, the
    `keep` largest moves and the first `keep` members (in member id order) changing level."""

    keep: int = 10
    members: int = 0
    moves: int = 0  # members whose level or scores would change
    from_to: dict[tuple[str, str], int] = field(default_factory=dict)  # level changes by (from, to) id
    sample: list[str] = field(default_factory=list)
    # Members pinned at a level the new ladder lacks: `--apply` refuses until they are released.
    # Pins are set by hand, one by one, so the list stays short.
    pins_dropped: list[tuple[str, str]] = field(default_factory=list)
    # Enrolled members whose level would fall below a programme's min_level: reported, left
    # enrolled (enrolments are made by hand, one by one, so the list stays short).
    below: list[tuple[str, str]] = field(default_factory=list)
    # Badges the history earns under the new rules that members have not had, and badges
    # members hold that the new rules lack, by badge id: members each.
    badges_granted: dict[str, int] = field(default_factory=dict)
    badges_revoked: dict[str, int] = field(default_factory=dict)
    _largest: list[tuple[int, _Earlier, Moved]] = field(default_factory=list)  # a heap, the smallest first

    @property
    def level_changes(self) -> int:
        return sum(self.from_to.values())

    def add(self, moved: Moved) -> None:
        self.moves += 1
        if moved.from_level != moved.to_level:
            pair = (moved.from_level, moved.to_level)
            self.from_to[pair] = self.from_to.get(pair, 0) + 1
            if len(self.sample) < self.keep:
                self.sample.append(moved.member_id)
        if self.keep <= 0:
            return
        entry = (moved.size, _Earlier(moved.member_id), moved)
        if len(self._largest) < self.keep:
            heapq.heappush(self._largest, entry)
        elif entry[:2] > self._largest[0][:2]:
            heapq.heapreplace(self._largest, entry)

    def largest(self) -> list[Moved]:
        """The largest moves, the largest first; equal ones in member id order."""
        return [moved for *_, moved in sorted(self._largest, key=lambda e: e[:2], reverse=True)]


_progress = Console(stderr=True)  # so that the report alone is on stdout (--json)


async def dry_run_report(settings: Settings, rules: Rules, keep: int = 10) -> RescoreReport:
    """Replay every member's applied records (in application order) under `rules`, with the
    same scoring code the scorer runs (`services.write.replay`), and compare with what is
    stored; writes nothing. The report keeps the `keep` largest moves and a sample of as many
    members changing level. A pinned level stays pinned."""
    engine = db.engine(settings.database_url, "cl-rescore")
    report = RescoreReport(keep)
    try:
        total = await replay.count_members(engine)
        with Progress(TextColumn("replaying"), MofNCompleteColumn(), TimeRemainingColumn(), console=_progress) as bar:
            task = bar.add_task("members", total=total)
            now = datetime.now(UTC)
            async for replayed in replay.replay_everyone(engine, rules, now):
                if replayed.dropped_pin is not None:
                    report.pins_dropped.append((replayed.state.member_id, replayed.dropped_pin))
                _compare(report, replayed, rules)
                report.below += [(replayed.state.member_id, p) for p in below_programs(replayed.state, rules, now)]
                for badge in replayed.granted:
                    report.badges_granted[badge] = report.badges_granted.get(badge, 0) + 1
                for badge in replayed.revoked:
                    report.badges_revoked[badge] = report.badges_revoked.get(badge, 0) + 1
                if report.members % 1000 == 0:
                    bar.update(task, completed=report.members)
            bar.update(task, completed=report.members)
    finally:
        await engine.dispose()
    return report


def _compare(report: RescoreReport, replayed: Replayed, rules: Rules) -> None:
    report.members += 1
    state = replayed.state
    if replayed.stored is None or state.level is None:
        return
    level, active, passive = replayed.stored
    new_active, new_passive = state.scores(rules)
    if (level, active, passive) != (state.level, new_active, new_passive):
        report.add(Moved(state.member_id, level, state.level, (active, new_active), (passive, new_passive)))


def summary(report: RescoreReport, rules: Rules, sample: int) -> dict[str, Any]:
    """The report as data: what `show_report` prints, by level id."""
    return {
        "rules_version": rules.version,
        "members": report.members,
        "level_changes": report.level_changes,
        "moves": report.moves,
        "from_to": [
            {"from": was, "to": now, "members": n}
            for (was, now), n in sorted(report.from_to.items(), key=lambda pair: _in_ladder_order(rules, pair[0]))
        ],
        "pins_dropped": [{"member_id": m, "level": level} for m, level in report.pins_dropped],
        "enrolled_below": [{"member_id": m, "program": p} for m, p in report.below],
        "badges": {
            "granted": dict(sorted(report.badges_granted.items())),
            "revoked": dict(sorted(report.badges_revoked.items())),
        },
        "largest_moves": [
            {"member_id": m.member_id, "active": list(m.active), "passive": list(m.passive)}
            for m in report.largest()[:sample]
        ],
        "sample": report.sample[:sample],
    }


def _in_ladder_order(rules: Rules, pair: tuple[str, str]) -> tuple[int, int, str, str]:
    """(from, to) in the order of the new ladder; a level it lacks after all of it."""
    ranks = [level.rank if (level := rules.find(i)) else len(rules.levels) + 1 for i in pair]
    return ranks[0], ranks[1], *pair


def show_report(report: RescoreReport, rules: Rules, sample: int) -> None:
    data = summary(report, rules, sample)
    console.print(
        f"{report.members:,} members replayed under rules {rules.version}; "
        f"{data['level_changes']:,} would change level, {data['moves']:,} would change level or scores"
    )
    console.print(from_to_table(report.from_to, rules, {level.id: level.name for level in rules.levels}))
    if report.pins_dropped:
        console.print(refusal(rules, report.pins_dropped))
    if report.below:
        console.print(below_note(report.below))
    console.print(badges_note(report.badges_granted, report.badges_revoked, "would be"))
    moves = Table(title="Largest score moves")
    for column in ("member", "active", "passive"):
        moves.add_column(column)
    for m in data["largest_moves"]:
        moves.add_row(m["member_id"], "{} → {}".format(*m["active"]), "{} → {}".format(*m["passive"]))
    console.print(moves)
    if data["sample"]:
        console.print("Sample: " + ", ".join(data["sample"]))


def from_to_table(pairs: dict[tuple[str, str], int], rules: Rules, names: dict[str, str]) -> Table:
    """Level changes counted by (from, to) level id, in the new ladder's order, shown by name
    where `names` has one."""
    table = Table(title="Level changes: from → to")
    for column in ("from", "to", "members"):
        table.add_column(column)
    for (was, now), n in sorted(pairs.items(), key=lambda pair: _in_ladder_order(rules, pair[0])):
        table.add_row(names.get(was, was), names.get(now, now), str(n))
    return table


def refusal(rules: Rules, pins: list[tuple[str, str]]) -> str:
    """Why `--apply` refuses rules whose ladder drops levels members are pinned at."""
    listed = ", ".join(f"{member} ({level})" for member, level in pins)
    return (
        f"rules {rules.version} have no level for {len(pins):,} pinned members: {listed}; "
        "release those pins (cl member unpin) or keep their levels in the ladder, then apply again"
    )


def below_note(below: list[tuple[str, str]]) -> str:
    """Enrolled members who would no longer be eligible: named, and left enrolled."""
    listed = ", ".join(f"{member} ({program})" for member, program in below)
    return (
        f"{len(below):,} enrolled members would be below their programme's level: {listed}; "
        "they stay enrolled (cl program leave PROGRAM MEMBER takes one out)"
    )


def badges_note(granted: dict[str, int], revoked: dict[str, int], were: str) -> str:
    """Badge changes, by badge id: members granted one, and members losing one the rules lack."""

    def listed(counts: dict[str, int]) -> str:
        return ", ".join(f"{badge} {n:,}" for badge, n in sorted(counts.items())) or "none"

    return f"Badges {were} granted: {listed(granted)}; {were} revoked (the rules lack them): {listed(revoked)}"


@dataclass
class Applied:
    """What `--apply` did, in counts: nothing here grows with the members."""

    rescored: int = 0
    changed: int = 0  # members whose level changed
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # those changes by (from, to) level id
    names: dict[str, str] = field(default_factory=dict)  # the levels' names, those the new ladder drops included
    below: list[tuple[str, str]] = field(default_factory=list)  # enrolled members below a programme's level
    badges: dict[str, int] = field(default_factory=dict)  # holders added and taken, by badge

    def count(self, changes: list[LevelChange]) -> None:
        self.changed += len(changes)
        for c in changes:
            if c.from_level is not None:
                self.names.setdefault(c.from_level.id, c.from_level.name)
                pair = (c.from_level.id, c.to_level.id)
                self.pairs[pair] = self.pairs.get(pair, 0) + 1


async def apply_everywhere(settings: Settings, rules: Rules, chunk: int) -> Applied:
    """Put `rules` in force, then rescore every member still under other rules, a chunk of
    members (in id order) a transaction, until none is left. The scorer scores under the rules
    in force from its next transaction on, rescoring first any member it meets that is not
    rescored yet, so no record counts under both rules. Interrupted, it is run again: the
    members rescored stay so, and it goes on with the others.

    Returns counts (`Applied`): nothing kept grows with the members but one chunk's."""
    engine = db.engine(settings.database_url, "cl-rescore")
    redis = Redis.from_url(settings.redis_url)
    work = UnitOfWork(engine, settings.rules, "", "")
    views = Views(engine, redis, MemberCache(redis, settings.redis_prefix), work.book, timedelta(0), timedelta(0))
    applied = Applied(names={level.id: level.name for level in rules.levels})
    try:
        try:
            await put_in_force(engine, work.book, rules)  # waits for transactions under the old rules
        except PinsOutside as exc:  # nothing of the switch is kept
            raise RulesError(refusal(rules, exc.pins)) from None
        total = await replay.count_behind(engine, rules.version)
        columns = (TextColumn("rescoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}/s"))
        with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("members", total=total, rate="–")
            started = time.monotonic()
            while True:  # again from the start: the scorer may have added members meanwhile
                after, behind = "", 0
                while True:
                    ids = await replay.members_behind(engine, rules.version, after, chunk)
                    if not ids:
                        break
                    written = list(views.written)
                    done = await work.rescore(ids, rules.version, datetime.now(UTC), written)
                    views.deleted(written)
                    await views.publish(done)
                    applied.rescored, behind, after = applied.rescored + len(done.states), behind + len(ids), ids[-1]
                    applied.count(done.changes)
                    for badge, n in done.badges.items():
                        applied.badges[badge] = applied.badges.get(badge, 0) + n
                    now = datetime.now(UTC)
                    applied.below += [
                        (m, p) for m, s in sorted(done.states.items()) for p in below_programs(s, rules, now)
                    ]
                    rate = applied.rescored / (time.monotonic() - started)
                    bar.update(task, completed=applied.rescored, rate=f"{rate:,.0f}")
                if not behind:
                    break
            await views.drop_written()  # the views are in Redis: their notes can go
    finally:
        await redis.aclose()
        await engine.dispose()
    return applied
