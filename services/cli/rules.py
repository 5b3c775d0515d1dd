"""`cl rules check`: validate a rules file and show what it changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli.output import console
from services.common import db
from services.common.settings import Settings
from services.write import rules as write_rules
from shared.rules import Rules, RulesError, load_rules

app = typer.Typer(no_args_is_help=True, help="Rules files.")


@app.command("check")
def rules_check(file: Annotated[Path, typer.Argument(help="the rules file to check")]) -> None:
    """Validate a rules file and show how it differs from the rules in force (those PostgreSQL
    names; CL_RULES_PATH's on a database that names none yet)."""
    try:
        new = load_rules(file)
    except RulesError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    worded = [name for name, metric in new.metrics.items() if metric.how is not None]
    if worded:
        # SPEC §10.1: the pages and /v1/levels make each text from the numbers in force.
        console.print(f"Note: the `how` texts of {', '.join(worded)} are not shown; the text is made from the numbers.")
    differences = rules_differences(asyncio.run(in_force(Settings())), new)
    if not differences:
        console.print(f"{file} is valid and the same as the rules in force (version {new.version}).")
        return
    table = Table(title=f"{file} is valid; what it changes")
    for column in ("what", "in force", "in the file"):
        table.add_column(column)
    for row in differences:
        table.add_row(*row)
    console.print(table)


async def in_force(settings: Settings) -> Rules:
    engine = db.engine(settings.database_url, "cl-rules")
    try:
        return await write_rules.in_force(engine, settings.rules)
    finally:
        await engine.dispose()


def rules_differences(old: Rules, new: Rules) -> list[tuple[str, str, str]]:
    """(what, in force, in the file) for each setting that differs."""
    rows = []
    if old.version != new.version:
        rows.append(("version", old.version, new.version))
    for name in old.metrics:
        rows += _changed(name, old.metrics[name].model_dump(), new.metrics[name].model_dump())
    old_levels = {level.id: level for level in old.levels}
    new_levels = {level.id: level for level in new.levels}
    for level_id in [*old_levels, *(i for i in new_levels if i not in old_levels)]:
        if level_id not in old_levels or level_id not in new_levels:
            where = ("absent", "present") if level_id in new_levels else ("present", "absent")
            rows.append((f"level {level_id}", *where))
            continue
        rows += _changed(f"level {level_id}", old_levels[level_id].model_dump(), new_levels[level_id].model_dump())
    return rows


def _changed(what: str, was: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what.setting, in force, in the file) for each setting that differs; a setting left out
    of one side (an unset look, say) shows as "unset"."""
    keys = [*was, *(k for k in now if k not in was)]
    return [
        (f"{what}.{k}", str(was.get(k, "unset")), str(now.get(k, "unset"))) for k in keys if was.get(k) != now.get(k)
    ]
