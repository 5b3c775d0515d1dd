"""Activity events (SPEC §3): the schema, its validation, and the records they become.

An accepted event becomes one activity record per member whose totals it can change (a
like touches the member who liked and the author who was liked); each record is keyed by
that member, so all of a member's records land on one partition, in order.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

EventType = Literal[
    "member_joined",
    "visit",
    "view",
    "group_joined",
    "event_attended",
    "post",
    "reply",
    "comment",
    "article",
    "like",
    "unlike",
    "solution_accepted",
    "content_removed",
]

# The optional fields each type uses; a type given a field it does not use is refused, so a
# mistake never scores silently (the same reasoning as for unknown fields).
FIELDS_BY_TYPE: dict[str, frozenset[str]] = {
    "member_joined": frozenset(),
    "visit": frozenset({"duration_s"}),
    **{
        t: frozenset({"content_id"})
        for t in ("view", "group_joined", "event_attended", "post", "reply", "comment", "article", "content_removed")
    },
    **{t: frozenset({"content_id", "target_member_id"}) for t in ("like", "unlike", "solution_accepted")},
}
TYPED_FIELDS = ("content_id", "target_member_id", "duration_s")

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(minutes=5)
MAX_ATTRIBUTES_BYTES = 4096
MAX_BATCH = 1000

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
MAX_ATTRIBUTES_DEPTH = 32


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, like 2026-11-20T09:00:00Z")
    head, dot, tail = value.upper().partition(".")
    if dot:  # Python keeps microseconds: drop digits past the sixth.
        digits = re.match(r"\d+", tail)
        assert digits is not None
        value = f"{head}.{digits.group()[:6]}{tail[digits.end() :]}"
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"is not a valid date and time: {exc}") from None
    parsed = parsed.astimezone(UTC)
    if parsed < EARLIEST:
        raise ValueError("must not be before 2000-01-01T00:00:00Z")
    return parsed


def iso_utc(at: datetime) -> str:
    """A UTC timestamp as the project writes it: RFC 3339 with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _printable(value: str) -> str:
    # Control, format (zero-width), surrogate, private-use and unassigned characters make ids
    # that look equal and are not; refuse them.
    for ch in value:
        if unicodedata.category(ch)[0] == "C":
            raise ValueError(f"must not contain the character U+{ord(ch):04X}")
    return value


EventId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:\-]{1,128}$")]
MemberId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:@\-]{1,128}$")]
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


class ActivityEvent(BaseModel):
    """One thing a member did, as the forum platform reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    type: EventType
    member_id: MemberId
    occurred_at: Timestamp
    content_id: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    target_member_id: MemberId | None = None
    duration_s: Annotated[StrictInt, Field(ge=0, le=86_400)] | None = None
    attributes: dict[str, Any] | None = None

    _check_content_id = field_validator("content_id")(lambda v: v if v is None else _printable(v))

    @field_validator("attributes")
    @classmethod
    def _small_attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            if _depth(value) > MAX_ATTRIBUTES_DEPTH:
                raise ValueError(f"is nested more than {MAX_ATTRIBUTES_DEPTH} levels deep")
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > MAX_ATTRIBUTES_BYTES:
                raise ValueError(f"is {size} bytes serialized; at most {MAX_ATTRIBUTES_BYTES} are allowed")
        return value

    @property
    def day(self) -> str:
        """The UTC calendar day the event belongs to, for daily caps and dedupe."""
        return self.occurred_at.date().isoformat()

    def subjects(self) -> list[str]:
        """The members whose totals this event can change: one record is published for each."""
        if self.target_member_id is not None and self.target_member_id != self.member_id:
            return [self.member_id, self.target_member_id]
        return [self.member_id]

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


class ActivityRecord(NamedTuple):
    """An event as applied to one member (the subject): the unit the scorer consumes."""

    subject: str
    event: ActivityEvent


@dataclass(frozen=True)
class EventError:
    """Why an event is invalid; `index` is its place in the batch (None: the request as a whole)."""

    index: int | None
    field: str
    reason: str


def _field_errors(index: int, exc: ValidationError) -> list[EventError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        field = ".".join(str(p) for p in loc) or "event"
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        elif err["type"] == "missing":
            reason = "required"
        out.append(EventError(index, field, reason))
    return out


def validate_event(raw: object, index: int = 0, now: datetime | None = None) -> ActivityEvent | list[EventError]:
    """The event, or every reason it is invalid. With `now`, timestamps ahead of it are refused."""
    if not isinstance(raw, dict):
        return [EventError(index, "event", "must be a JSON object")]
    try:
        event = ActivityEvent.model_validate(raw)
    except ValidationError as exc:
        return _field_errors(index, exc)
    errors = []
    uses = FIELDS_BY_TYPE[event.type]
    for field in TYPED_FIELDS:
        given = getattr(event, field) is not None
        if field in uses and not given:
            errors.append(EventError(index, field, f"required for type {event.type}"))
        elif given and field not in uses:
            errors.append(EventError(index, field, f"not used by type {event.type}"))
    if now is not None and event.occurred_at > now + MAX_FUTURE:
        errors.append(EventError(index, "occurred_at", "must not be more than 5 minutes ahead of the server clock"))
    return errors or event


class RecordError(ValueError):
    """An activity record that cannot be decoded or validated (it goes to the dead-letter topic)."""


def decode_record(key: bytes | None, value: bytes | None) -> ActivityRecord:
    try:
        raw = parse_json(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"value is not JSON: {exc}") from None
    result = validate_event(raw)
    if isinstance(result, list):
        raise RecordError("; ".join(f"{e.field}: {e.reason}" for e in result))
    subject = key.decode(errors="replace") if key is not None else ""
    if subject not in result.subjects():
        raise RecordError(f"key {subject!r} is not a member this event changes")
    return ActivityRecord(subject, result)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range for a number")
    return number


def parse_json(body: bytes) -> Any:
    """Strict JSON: NaN, Infinity and numbers too large for a double are refused (RFC 8259)."""
    return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
