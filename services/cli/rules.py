"""`cl rules check`: validate a rules file and show what it changes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
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
    rows += _by_id("level", {lv.id: lv for lv in old.levels}, {lv.id: lv for lv in new.levels})
    return rows + _by_id("program", {p.id: p for p in old.programs}, {p.id: p for p in new.programs})


def _by_id(kind: str, old: Mapping[str, BaseModel], new: Mapping[str, BaseModel]) -> list[tuple[str, str, str]]:
    """(what, in force, in the file) for each item of one kind (levels, programmes) added,
    removed, or with a setting that differs."""
    rows = []
    for item_id in [*old, *(i for i in new if i not in old)]:
        if item_id not in old or item_id not in new:
            where = ("absent", "present") if item_id in new else ("present", "absent")
            rows.append((f"{kind} {item_id}", *where))
            continue
        rows += _changed(f"{kind} {item_id}", old[item_id].model_dump(), new[item_id].model_dump())
    return rows


def _changed(what: str, was: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what.setting, in force, in the file) for each setting that differs; a setting left out
    of one side (an unset look, say) shows as "unset"."""
    keys = [*was, *(k for k in now if k not in was)]
    return [
        (f"{what}.{k}", str(was.get(k, "unset")), str(now.get(k, "unset"))) for k in keys if was.get(k) != now.get(k)
    ]
