"""`cl webhook …` (SPEC §12): register the endpoints the dispatcher POSTs events to, and look at
their deliveries. Every change is audited (`webhook_audit`, with --operator)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from services.cli.members import Operator, _operator
from services.cli.output import console
from services.common import db
from services.common.addresses import AddressRefused, check_url, resolve
from services.common.settings import load_settings
from services.webhooks.settings import WebhookSettings
from services.write.webhooks import Webhooks
from shared.webhooks import causes, event_types, short_name

app = typer.Typer(no_args_is_help=True, help="Webhook endpoints: register them, look at their deliveries.")

EndpointId = Annotated[int, typer.Argument(help="the endpoint's id (cl webhook list)")]
# A rotated-out secret still signs this long, so receivers can switch to the new one.
ROTATION_OVERLAP = timedelta(hours=24)

T = TypeVar("T")


def _run(operation: Callable[[Webhooks], Awaitable[T]]) -> T:
    settings = load_settings(WebhookSettings, "cl")

    async def run() -> T:
        engine = db.engine(settings.database_url, "cl-webhook")
        try:
            return await operation(Webhooks(engine, settings.fernet()))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _refuse(message: str) -> typer.Exit:
    console.print(f"[red]{message}; nothing changed[/red]")
    return typer.Exit(2)


@app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="where to POST: https://…")],
    events: Annotated[
        str,
        typer.Option(
            help="comma-separated: promoted, demoted, badge.granted, badge.revoked, program.joined, "
            "program.left, member.erased (forget the member), or all"
        ),
    ],
    exclude_cause: Annotated[
        str, typer.Option(help="level changes of these causes are not sent: activity, tenure, rescore, override")
    ] = "",
    operator: Operator = None,
) -> None:
    """Register an endpoint and print its secret (shown this once: keep it to verify signatures).
    A URL whose host resolves to a loopback, private or link-local address is refused unless
    CL_WEBHOOK_ALLOW_PRIVATE is set."""
    who = _operator(operator)
    settings = load_settings(WebhookSettings, "cl")
    try:
        types, left_out = event_types(events), causes(exclude_cause)
        host, port = check_url(url)
        asyncio.run(resolve(host, port, settings.webhook_allow_private))
    except (ValueError, AddressRefused) as exc:
        raise _refuse(str(exc)) from None
    endpoint_id, secret = _run(lambda hooks: hooks.add(url, types, left_out, who, datetime.now(UTC)))
    console.print(f"endpoint {endpoint_id} added by {who}: {url}")
    console.print(f"secret (shown this once): {secret}", soft_wrap=True)


@app.command("list")
def list_() -> None:
    """Every endpoint: what it takes, whether it is enabled, what waits for it."""
    rows = _run(lambda hooks: hooks.endpoints())
    table = Table("id", "url", "events", "excluded causes", "state", "pending", "last attempt")
    for row in rows:
        state = "enabled" if row.enabled else f"disabled ({row.disabled_reason or 'by an operator'})"
        if row.enabled and row.failing_since:
            state = f"enabled, failing since {row.failing_since.isoformat(timespec='seconds')}"
        table.add_row(
            str(row.id),
            row.url,
            ",".join(map(short_name, row.events)),
            ",".join(row.exclude_causes) or "-",
            state,
            str(row.pending),
            row.last_attempt.isoformat(timespec="seconds") if row.last_attempt else "-",
        )
    console.print(table if rows else "no endpoint registered")


@app.command("disable")
def disable(endpoint_id: EndpointId, operator: Operator = None) -> None:
    """Stop sending to an endpoint; events read meanwhile are not kept for it."""
    who = _operator(operator)
    _changed(_run(lambda hooks: hooks.set_enabled(endpoint_id, False, who, datetime.now(UTC))), endpoint_id)
    console.print(f"endpoint {endpoint_id} disabled by {who}")


@app.command("enable")
def enable(endpoint_id: EndpointId, operator: Operator = None) -> None:
    """Send to an endpoint again (one disabled after a day of failures too): what was pending goes first."""
    who = _operator(operator)
    _changed(_run(lambda hooks: hooks.set_enabled(endpoint_id, True, who, datetime.now(UTC))), endpoint_id)
    console.print(f"endpoint {endpoint_id} enabled by {who}")


@app.command("remove")
def remove(endpoint_id: EndpointId, operator: Operator = None) -> None:
    """Delete an endpoint with its pending deliveries and attempts (the audit stays)."""
    who = _operator(operator)
    _changed(_run(lambda hooks: hooks.remove(endpoint_id, who, datetime.now(UTC))), endpoint_id)
    console.print(f"endpoint {endpoint_id} removed by {who}")


@app.command("rotate-secret")
def rotate_secret(endpoint_id: EndpointId, operator: Operator = None) -> None:
    """A new secret, printed this once; the old one also signs for 24 hours, so the receiver can
    switch without refusing a request."""
    who = _operator(operator)
    secret = _run(lambda hooks: hooks.rotate(endpoint_id, who, datetime.now(UTC), ROTATION_OVERLAP))
    _changed(secret is not None, endpoint_id)
    console.print(f"endpoint {endpoint_id}: new secret (shown this once): {secret}", soft_wrap=True)


@app.command("deliveries")
def deliveries(
    endpoint_id: EndpointId,
    days: Annotated[int, typer.Option(min=1, max=7, help="how many days back (attempts are kept 7)")] = 7,
) -> None:
    """The attempts to deliver to an endpoint over the last days, the latest first."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows: list[Any] | None = _run(lambda hooks: hooks.attempts(endpoint_id, since))
    _changed(rows is not None, endpoint_id, "nothing to show")
    assert rows is not None
    table = Table("at", "event id", "type", "member", "outcome", "status", "error", "ms")
    for row in rows:
        table.add_row(
            row.at.isoformat(timespec="seconds"),
            row.event_id,
            short_name(row.event_type),
            row.member_id,
            row.outcome,
            str(row.status or "-"),
            row.error or "",
            str(row.duration_ms),
        )
    console.print(table if rows else f"no attempt in the last {days} days")


def _changed(found: bool, endpoint_id: int, nothing: str = "nothing changed") -> None:
    if not found:
        console.print(f"[red]no endpoint {endpoint_id} (cl webhook list); {nothing}[/red]")
        raise typer.Exit(1)
