"""From the bytes of an activity record (key and value, as ingest published them) to the
ActivityRecord the scorer applies, or a RecordError that sends the record to the dead-letter
topic."""

from __future__ import annotations

from services.common.strict_json import parse_json
from shared.events import ActivityRecord, shown, validate_event


class RecordError(ValueError):
    """An activity record that cannot be decoded or validated (it goes to the dead-letter topic).
    Its message is always encodable text, so it can travel as a Kafka header."""


def decode_record(key: bytes | None, value: bytes | None) -> ActivityRecord:
    """The record, or RecordError for any bytes that are not a valid event keyed by a member it
    changes. A record that passes is also one PostgreSQL can store as jsonb, as it was sent."""
    try:
        raw = parse_json(value or b"")
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise RecordError(f"value is not JSON: {shown(str(exc))}") from None
    result = validate_event(raw)
    if isinstance(result, list):
        raise RecordError("; ".join(f"{problem.field}: {problem.reason}" for problem in result))
    subject = key.decode(errors="replace") if key is not None else ""
    if subject not in result.subjects():
        raise RecordError(f"key {shown(subject)!r} is not a member this event changes")
    return ActivityRecord(subject, result)
