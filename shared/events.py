"""Activity events (SPEC §3): the schema, its validation, and the records they become.

Each event type is its own model: the fields it requires, and the optional ones it does not
use refused, so one definition gives both the validation and the OpenAPI document (a
discriminated union on `type`). Ingest validates requests with it and the scorer validates
records with it, so what one accepts the other can store: PostgreSQL's jsonb takes neither
U+0000 nor a lone surrogate, nor every number JSON can write.

An accepted event becomes one activity record per member whose totals it can change (a
like touches the member who liked and the author who was liked); each record is keyed by
that member, so all of a member's records land on one partition, in order.

Reading events from bytes is the services' work: strict JSON in services.common.strict_json,
Kafka records in services.scorer.records, request bodies and their answers in services.ingest.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(minutes=5)
MAX_ATTRIBUTES_BYTES = 4096
MAX_ATTRIBUTES_DEPTH = 32
MAX_BATCH = 1000
# jsonb stores a number as written, digit by digit: past 16,383 decimal places it refuses it.
# A double needs far fewer; this bound keeps every stored number small and storable.
MAX_DECIMAL_PLACES = 1000

_RFC3339 = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
_TIMESTAMP = re.compile(_RFC3339, re.ASCII)


class BadNumber:
    """A JSON number that cannot be held as a finite double or stored in jsonb. The services'
    JSON parser (services.common.strict_json) leaves it in place of the number, so validation
    refuses it naming the field it is in."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"BadNumber({self.text[:40]!r})"


def shown(text: str) -> str:
    """Text safe to put in an answer or a log line: control, format and surrogate characters
    (which may not even encode as UTF-8) are written as escapes."""
    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in text)


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str) or not (match := _TIMESTAMP.fullmatch(value)):
        raise ValueError("must be an RFC 3339 timestamp with an offset, like 2026-11-20T09:00:00Z")
    start, end = match.span(1)
    if end - start > 7:  # the dot and six digits: Python keeps microseconds, drop the rest
        value = value[: start + 7] + value[end:]
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise ValueError(f"is not a valid date and time: {exc}") from None
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past the last instant Python holds
        raise ValueError("is out of range: in UTC it falls outside the years 1 to 9999") from None
    if parsed < EARLIEST:
        raise ValueError("must not be before 2000-01-01T00:00:00Z")
    return parsed


def iso_utc(at: datetime) -> str:
    """A UTC timestamp as the project writes it: RFC 3339 with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _printable(value: str) -> str:
    # Control, format (zero-width), surrogate, private-use and unassigned characters make ids
    # that look equal and are not; refuse them.
    if value.isprintable():  # no "Other" character (nor a separator but the space): the usual case
        return value
    for ch in value:
        if unicodedata.category(ch)[0] == "C":
            raise ValueError(f"must not contain the character U+{ord(ch):04X}")
    return value


def _storable_text(text: str) -> str | None:
    """Why jsonb cannot store this string, or None."""
    if text.isascii() and "\x00" not in text:  # the usual case, without a loop
        return None
    for ch in text:
        if ch == "\x00" or "\ud800" <= ch <= "\udfff":
            return f"holds the character U+{ord(ch):04X}, which cannot be stored"
    return None


def _attributes(value: object) -> object:
    """Attributes as jsonb can store them: every key and value at any depth, walked without
    recursion (json.loads nests up to ~1,000 levels; a recursive walk would fail first)."""
    if not isinstance(value, dict):
        return value  # None or not an object: the type check names it
    stack: list[tuple[object, str, int]] = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        problem = None
        if isinstance(node, dict | list):
            if depth > MAX_ATTRIBUTES_DEPTH:
                raise ValueError(f"is nested more than {MAX_ATTRIBUTES_DEPTH} levels deep")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in items:
                if isinstance(key, str) and (problem := _storable_text(key)):
                    raise ValueError(f"key {json.dumps(path + '/' + key)} {problem}")
                stack.append((item, f"{path}/{key}", depth + 1))
        elif isinstance(node, str):
            problem = _storable_text(node)
        elif isinstance(node, BadNumber):
            problem = (
                f"holds the number {node.text[:40]}, out of range (a finite double, {MAX_DECIMAL_PLACES} decimals)"
            )
        elif isinstance(node, float) and not math.isfinite(node):
            problem = f"holds {node}, which JSON cannot write"
        elif not (node is None or isinstance(node, bool | int | float)):
            problem = f"holds a {type(node).__name__}, which is not JSON"
        if problem:
            raise ValueError(f"at {json.dumps(path or '/')}: {problem}")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"is {size} bytes serialized; at most {MAX_ATTRIBUTES_BYTES} are allowed")
    return value


def _whole(value: object) -> object:
    # JSON Schema's integer is any number without a fraction: 600.0 and 6e2 are 600.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _unused(value: object) -> None:
    raise PydanticCustomError("not_used", "not used by this type")


# What a member id may be, wherever one is taken: in events, and in the API's paths and queries.
MEMBER_ID_PATTERN = r"[A-Za-z0-9._:@\-]{1,128}"
MEMBER_ID = f"^{MEMBER_ID_PATTERN}$"

EventId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:\-]{1,128}$")]
MemberId = Annotated[StrictStr, Field(pattern=MEMBER_ID)]
ContentId = Annotated[StrictStr, Field(min_length=1, max_length=256), AfterValidator(_printable)]
Duration = Annotated[StrictInt, Field(ge=0, le=86_400), BeforeValidator(_whole)]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": f"^{_RFC3339}$"}),
]
Attributes = Annotated[
    dict[str, Any],
    BeforeValidator(_attributes),
    Field(description=f"carried along, never scored; at most {MAX_ATTRIBUTES_BYTES} bytes serialized"),
]
# A field the event's type does not use: refused whenever given (null too), and absent from
# the type's schema, so a mistake never scores silently.
Unused = SkipJsonSchema[Annotated[None, BeforeValidator(_unused)]]


class ActivityEvent(BaseModel):
    """One thing a member did, as the forum platform reports it. Each type below is a subclass;
    validating through this class picks the type's own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    type: str
    member_id: MemberId
    occurred_at: Timestamp
    content_id: ContentId | None = None
    target_member_id: MemberId | None = None
    duration_s: Duration | None = None
    attributes: Attributes | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _by_type(cls, data: Any, handler: ModelWrapValidatorHandler[ActivityEvent]) -> ActivityEvent:
        if cls is ActivityEvent:
            return EVENT.validate_python(data)
        return handler(data)

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


class _MemberOnly(ActivityEvent):
    content_id: Unused = None
    target_member_id: Unused = None
    duration_s: Unused = None


class _OnContent(ActivityEvent):
    content_id: ContentId
    target_member_id: Unused = None
    duration_s: Unused = None


class _OnAuthorsContent(ActivityEvent):
    content_id: ContentId
    target_member_id: MemberId = Field(description="the author of the content acted on")
    duration_s: Unused = None


class MemberJoined(_MemberOnly):
    """The member joined the community; the earliest one sets joined_at."""

    type: Literal["member_joined"]


class Visit(ActivityEvent):
    """The member visited for duration_s seconds."""

    type: Literal["visit"]
    content_id: Unused = None
    target_member_id: Unused = None
    duration_s: Duration


class View(_OnContent):
    """The member viewed content_id."""

    type: Literal["view"]


class GroupJoined(_OnContent):
    """The member joined the group content_id."""

    type: Literal["group_joined"]


class EventAttended(_OnContent):
    """The member attended the event content_id."""

    type: Literal["event_attended"]


class Post(_OnContent):
    """The member created the post content_id."""

    type: Literal["post"]


class Reply(_OnContent):
    """The member created the reply content_id."""

    type: Literal["reply"]


class Comment(_OnContent):
    """The member created the comment content_id."""

    type: Literal["comment"]


class Article(_OnContent):
    """The member published the article or blog content_id."""

    type: Literal["article"]


class ContentRemoved(_OnContent):
    """The member's content content_id was removed: its creation points are taken back."""

    type: Literal["content_removed"]


class Like(_OnAuthorsContent):
    """The member liked content_id, written by target_member_id."""

    type: Literal["like"]


class Unlike(_OnAuthorsContent):
    """The member took back a like of content_id, written by target_member_id."""

    type: Literal["unlike"]


class SolutionAccepted(_OnAuthorsContent):
    """The member accepted target_member_id's reply content_id as the solution."""

    type: Literal["solution_accepted"]


class BadgeAwarded(_OnContent):
    """An outside system (the forum, the training academy) awarded the member the manual badge
    content_id (SPEC §10.2): granted once, whatever the number of awards."""

    type: Literal["badge_awarded"]
    content_id: Annotated[StrictStr, Field(pattern=r"^[a-z0-9_]{1,64}$", description="the badge's id")]


AnyEvent = Annotated[
    MemberJoined
    | Visit
    | View
    | GroupJoined
    | EventAttended
    | Post
    | Reply
    | Comment
    | Article
    | ContentRemoved
    | Like
    | Unlike
    | SolutionAccepted
    | BadgeAwarded,
    Field(discriminator="type"),
]
EVENT: TypeAdapter[ActivityEvent] = TypeAdapter(AnyEvent)
# The event types that name a second member (the author of the content acted on): each is
# published, and applied, once for each member it names.
NAMING_TWO: frozenset[str] = frozenset(
    get_args(model.model_fields["type"].annotation)[0] for model in _OnAuthorsContent.__subclasses__()
)
# A JSON array of stored events (validated on their way in), read back in one call: a replay.
EVENTS: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[AnyEvent])
_FIELDS = frozenset(ActivityEvent.model_fields)


class ActivityRecord(NamedTuple):
    """An event as applied to one member (the subject): the unit the scorer consumes."""

    subject: str
    event: ActivityEvent


class Problem(NamedTuple):
    """Why an event is invalid: the field at fault ("event" for the whole) and the reason, both
    text that encodes, so either may travel in an answer or a Kafka header."""

    field: str
    reason: str


# The fields every type requires; the others are required or refused by type.
COMMON_FIELDS = frozenset({"event_id", "type", "member_id", "occurred_at"})


def _problems(raw: dict[Any, Any], exc: ValidationError) -> list[Problem]:
    kind = raw.get("type")
    out = []
    for err in exc.errors(include_url=False):
        loc = err["loc"][1:]  # the first part names the type's model
        field = shown(".".join(str(p) for p in loc))
        reason = err["msg"].removeprefix("Value error, ")
        match err["type"]:
            case "union_tag_not_found":
                field, reason = "type", "required"
            case "union_tag_invalid":
                field, reason = "type", f"must be one of {err.get('ctx', {}).get('expected_tags', '')}"
            case "extra_forbidden":
                reason = "unknown field"
            case "missing":
                reason = "required" if field in COMMON_FIELDS else f"required for type {kind}"
            case "not_used":
                reason = f"not used by type {kind}"
            case "string_unicode":
                reason = "holds a lone surrogate (U+D800 to U+DFFF), which cannot be stored"
            case _ if isinstance(err.get("input"), BadNumber):
                reason = f"the number {err['input'].text[:40]} is out of range"
        out.append(Problem(field or "event", shown(reason)))
    return out


def validate_event(raw: object, now: datetime | None = None) -> ActivityEvent | list[Problem]:
    """The event, or every reason it is invalid. With `now`, timestamps ahead of it are refused."""
    if not isinstance(raw, dict):
        return [Problem("event", "must be a JSON object")]
    # pydantic cannot read a name holding a lone surrogate, and no field is named so.
    if not raw.keys() <= _FIELDS:
        odd = [Problem(shown(str(name)), "unknown field") for name in raw if _storable_text(str(name))]
        if odd:
            return odd
    try:
        event = EVENT.validate_python(raw)
    except ValidationError as exc:
        return _problems(raw, exc)
    if now is not None and event.occurred_at > now + MAX_FUTURE:
        return [Problem("occurred_at", "must not be more than 5 minutes ahead of the server clock")]
    return event
