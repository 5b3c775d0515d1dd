"""`cl backfill` (SPEC §9.2): import a history through ingest's validation and the activity topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.cli.output import console
from services.common.kafka import ensure_topics
from services.common.kafka import producer as make_producer
from services.common.settings import Settings
from services.common.strict_json import parse_json
from shared.events import ActivityEvent, shown, validate_event

BATCH = 1000  # records sent before waiting for Kafka's acknowledgements


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
