"""`cl program …` (SPEC §11): enrol a member in a programme, or take them out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import typer

from services.cli.members import Operator, _operator, _reason, _run
from services.cli.output import console
from services.common.settings import Settings
from services.write.unit_of_work import Committed, UnitOfWork

app = typer.Typer(no_args_is_help=True, help="Programmes: enrol a member, or take them out.")

Program = Annotated[str, typer.Argument(help="the programme's id in the rules file (community_boss)")]
Member = Annotated[str, typer.Argument(help="the member")]
Reason = Annotated[str | None, typer.Option(help="why, for the audit log and the event")]


@app.command("enroll")
def enroll(program: Program, member_id: Member, operator: Operator = None, reason: Reason = None) -> None:
    """Enrol a member while an intake window of the programme is open, if the member was
    eligible on its intake date (the earned level then). Enrolling again changes nothing."""
    _change(UnitOfWork.enroll, program, member_id, operator, reason, "enrolled in {program} by {who}", "is already")


@app.command("leave")
def leave(program: Program, member_id: Member, operator: Operator = None, reason: Reason = None) -> None:
    """Take a member out of a programme, at any time."""
    _change(UnitOfWork.leave, program, member_id, operator, reason, "left {program}, by {who}", "is not")


Change = Callable[[UnitOfWork, str, str, str, str | None, datetime], Awaitable[Committed | None]]


def _change(
    change: Change, program: str, member_id: str, operator: str | None, reason: str | None, done: str, was: str
) -> None:
    """Run one enrolment change (audited, with its event) and say what it did."""
    who = _operator(operator)
    why = _reason(reason) if reason is not None else None
    if _run(Settings(), lambda work: change(work, member_id, program, who, why, datetime.now(UTC))) is None:
        console.print(f"{member_id} {was} enrolled in {program}; nothing changed")
        return
    console.print(f"{member_id} {done.format(program=program, who=who)}")
