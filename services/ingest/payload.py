"""From a request body to validated events (SPEC §3): size, JSON, envelope, every event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request

from services.common.strict_json import parse_json
from services.ingest.errors import EventError, InvalidEvents, NotJson, TooLarge
from shared.events import MAX_BATCH, ActivityEvent, shown, validate_event

MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with TooLarge as soon as it is known to pass `limit`: a client's
    Content-Length is trusted to refuse, never to accept, so a chunked or mislabelled body is
    counted as it arrives and never read past the limit."""
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        declared = 0  # not a number: the body is counted as it arrives, like a chunked one
    if declared > limit:
        raise TooLarge(f"the body is {declared} bytes; at most {limit} are allowed")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the body is over {limit} bytes; at most {limit} are allowed")
    return bytes(body)


def parse_body(body: bytes) -> Any:
    try:
        return parse_json(body)
    except UnicodeDecodeError as exc:
        raise NotJson(f"the body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:  # not JSON, NaN or Infinity, a name twice in an object, nested too deeply
        raise NotJson(f"the body is not JSON this service reads: {shown(str(exc))}") from None


def events_of(raw: Any, now: datetime) -> list[tuple[ActivityEvent, bytes]]:
    """Each event of a request with its record value, or InvalidEvents naming every problem.

    The body is one event object, or `{"events": [...]}` with 1 to MAX_BATCH of them.
    """
    if not isinstance(raw, dict):
        raise InvalidEvents(
            'the body must be one event object or {"events": [...]}',
            [EventError(None, "body", "must be a JSON object")],
        )
    if "events" in raw:
        items = raw["events"]
        others = sorted(set(raw) - {"events"})
        if others:
            raise InvalidEvents(
                "a batch holds only events", [EventError(None, name, "unknown field beside events") for name in others]
            )
        if not isinstance(items, list) or not items:
            raise InvalidEvents(
                "events must be a non-empty list",
                [EventError(None, "events", f"must be a list of 1 to {MAX_BATCH} events")],
            )
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch holds at most {MAX_BATCH} events; this one has {len(items)}")
    else:
        items = [raw]

    accepted: list[tuple[ActivityEvent, bytes]] = []
    errors: list[EventError] = []
    for index, item in enumerate(items):
        result = validate_event(item, now)
        if isinstance(result, list):
            errors.extend(EventError(index, field, reason) for field, reason in result)
            continue
        accepted.append((result, result.to_json()))
    if errors:
        invalid = len({error.index for error in errors})
        raise InvalidEvents(f"{invalid} of {len(items)} events are invalid; none was published", errors)
    return accepted
