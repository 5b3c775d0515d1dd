"""`cl member …` (SPEC §9.3, §9.4): one member's level and data."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="One member: pin or release a level, erase.")
