"""`cl badge …` (SPEC §10.2): grant a member a badge by hand, or revoke one; both audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from services.cli.members import Operator, _operator, _reason, _run
from services.cli.output import console
from services.common.settings import Settings
from services.write.unit_of_work import UnitOfWork

app = typer.Typer(no_args_is_help=True, help="Badges: grant one by hand (an academy certificate), or revoke one.")

Member = Annotated[str, typer.Argument(help="the member")]
Badge = Annotated[str, typer.Argument(help="the badge's id in the rules in force (academy_certified)")]
Reason = Annotated[str, typer.Option(help="why, for the audit log and the event", show_default=False)]


@app.command("grant")
def grant(member_id: Member, badge: Badge, reason: Reason, operator: Operator = None) -> None:
    """Grant a member a badge of the rules in force (a manual one, or an automatic one given by
    hand). Granting a badge the member holds changes nothing."""
    who, why = _operator(operator), _reason(reason)
    now = datetime.now(UTC)
    if _run(Settings(), lambda work: UnitOfWork.grant_badge(work, member_id, badge, who, why, now)) is None:
        console.print(f"{member_id} holds {badge} already; nothing changed")
        return
    console.print(f"{member_id} was granted {badge} by {who}")


@app.command("revoke")
def revoke(member_id: Member, badge: Badge, reason: Reason, operator: Operator = None) -> None:
    """Revoke a badge the member holds; the scorer will not grant it again by itself."""
    who, why = _operator(operator), _reason(reason)
    now = datetime.now(UTC)
    if _run(Settings(), lambda work: UnitOfWork.revoke_badge(work, member_id, badge, who, why, now)) is None:
        console.print(f"{member_id} does not hold {badge}; nothing changed")
        return
    console.print(f"{member_id} no longer holds {badge}: revoked by {who}")
