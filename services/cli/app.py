"""`cl`: the operators' command line (SPEC §9), built on typer, with rich for tables and
progress. Its commands use the services' settings (CL_* variables); each lives in a module
of its own."""

from __future__ import annotations

import typer

from services.cli import backfill, badges, erasure, members, programs, rescore, rules, webhooks

app = typer.Typer(no_args_is_help=True, help="Operate Community Levels (SPEC §9).")
app.add_typer(rules.app, name="rules")
app.add_typer(members.app, name="member")
members.app.command("erase")(erasure.erase)
app.add_typer(programs.app, name="program")
app.add_typer(badges.app, name="badge")
app.add_typer(webhooks.app, name="webhook")
app.command()(rescore.rescore)
app.command()(backfill.backfill)
