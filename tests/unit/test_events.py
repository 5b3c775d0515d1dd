"""The activity event contract (SPEC §3), one test per rule of shared.events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import EVENT, NAMING_TWO, ActivityEvent, BadNumber, Like, Problem, validate_event

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

# One valid event of each shape; tests change one field at a time.
BASE: dict[str, Any] = {
    "event_id": "e-1",
    "type": "member_joined",
    "member_id": "m-1",
    "occurred_at": "2026-11-20T08:00:00Z",
}
LIKE: dict[str, Any] = {**BASE, "type": "like", "content_id": "post-9", "target_member_id": "m-2"}
VISIT: dict[str, Any] = {**BASE, "type": "visit", "duration_s": 600}


def event(raw: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**raw, **changes}


def valid(raw: object) -> ActivityEvent:
    result = validate_event(raw, NOW)
    assert isinstance(result, ActivityEvent), result
    return result


def problems(raw: object) -> dict[str, str]:
    """field -> reason, for an event that must be invalid."""
    result = validate_event(raw, NOW)
    assert isinstance(result, list), f"accepted: {raw!r}"
    assert all(isinstance(problem, Problem) for problem in result)
    return dict(result)


def test_an_event_must_be_a_json_object() -> None:
    assert problems([BASE]) == {"event": "must be a JSON object"}


# --- ids ---


@pytest.mark.parametrize("event_id", ["a", "A-z_0.9:x", "x" * 128])
def test_event_id_takes_1_to_128_of_its_charset(event_id: str) -> None:
    valid(event(BASE, event_id=event_id))


@pytest.mark.parametrize(
    "event_id",
    ["", "x" * 129, "e 1", "e/1", "e@1", "é", "e1\n", "\ne1", "e\x001", "e\u200b1", "e\ud8001", "e\t1", "٣"],
)
def test_event_id_outside_its_charset_or_length_is_refused(event_id: str) -> None:
    assert "event_id" in problems(event(BASE, event_id=event_id))


@pytest.mark.parametrize("member_id", ["m@example.org", "a", "x" * 128])
def test_member_id_takes_1_to_128_of_its_charset_with_at(member_id: str) -> None:
    valid(event(BASE, member_id=member_id))


@pytest.mark.parametrize("field", ["member_id", "target_member_id"], ids=["member_id", "target_member_id"])
@pytest.mark.parametrize(
    "member_id", ["", "x" * 129, "m 1", "m1\n", "m\x001", "m\u200b1", "m\ud8001", "m\u03011", "m+1"]
)
def test_member_ids_outside_their_charset_or_length_are_refused(field: str, member_id: str) -> None:
    assert field in problems(event(LIKE, **{field: member_id}))


@pytest.mark.parametrize("field", ["event_id", "member_id", "content_id", "target_member_id"])
def test_ids_must_be_strings(field: str) -> None:
    assert field in problems(event(LIKE, **{field: 12}))


# --- content_id ---


@pytest.mark.parametrize("content_id", ["p", "x" * 256, "forum/thread 12#post-3", "café ☕", "Ünïcödé"])
def test_content_id_takes_1_to_256_printable_characters(content_id: str) -> None:
    assert valid(event(LIKE, content_id=content_id)).content_id == content_id


@pytest.mark.parametrize(
    "content_id",
    ["", "x" * 257, "a\x00b", "a\nb", "a\x7fb", "a\u200bb", "a\u202eb", "a\ufeffb", "a\ud800b", "\udfff", "a\ue000b"],
    ids=["empty", "257", "nul", "newline", "del", "zero-width", "bidi", "bom", "lone-high", "lone-low", "private"],
)
def test_content_id_refuses_empty_long_and_invisible_characters(content_id: str) -> None:
    assert "content_id" in problems(event(LIKE, content_id=content_id))


@pytest.mark.parametrize("field", ["event_id", "member_id", "content_id", "target_member_id"])
def test_a_lone_surrogate_in_any_string_field_is_named_as_unstorable(field: str) -> None:
    assert problems(event(LIKE, **{field: "a\ud800"})) == {
        field: "holds a lone surrogate (U+D800 to U+DFFF), which cannot be stored"
    }


# --- occurred_at ---


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2026-11-20T08:00:00Z", "2026-11-20T08:00:00+00:00"),
        ("2026-11-20T10:00:00+02:00", "2026-11-20T08:00:00+00:00"),
        ("2026-11-20T03:30:00-04:30", "2026-11-20T08:00:00+00:00"),
        ("2026-11-20T08:00:00.123456789Z", "2026-11-20T08:00:00.123456+00:00"),
        ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00+00:00"),
    ],
)
def test_occurred_at_is_rfc3339_with_an_offset_kept_in_utc(given: str, utc: str) -> None:
    assert valid(event(BASE, occurred_at=given)).occurred_at.isoformat() == utc


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-20T08:00:00",  # no offset
        "2026-11-20",
        "2026-11-20 08:00:00Z",
        "2026-11-20T08:00Z",
        "2026-11-20T08:00:00+0200",
        "20261120T080000Z",
        "2026-02-30T08:00:00Z",
        "2026-11-20T24:00:00Z",
        "2026-11-20T08:00:00Z\n",
        1763625600,
        None,
    ],
)
def test_occurred_at_without_an_offset_or_malformed_is_refused(occurred_at: object) -> None:
    assert "occurred_at" in problems(event(BASE, occurred_at=occurred_at))


@pytest.mark.parametrize("occurred_at", ["1999-12-31T23:59:59Z", "2000-01-01T00:30:00+01:00", "0001-01-01T00:00:00Z"])
def test_occurred_at_before_2000_is_refused(occurred_at: str) -> None:
    assert problems(event(BASE, occurred_at=occurred_at)) == {"occurred_at": "must not be before 2000-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "occurred_at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-00:01"]
)
def test_occurred_at_that_overflows_in_utc_is_refused_not_raised(occurred_at: str) -> None:
    assert "occurred_at" in problems(event(BASE, occurred_at=occurred_at))


def test_occurred_at_at_the_end_of_time_is_kept_for_the_scorer() -> None:
    assert isinstance(validate_event(event(BASE, occurred_at="9999-12-31T23:59:59+00:00")), ActivityEvent)


def test_occurred_at_up_to_5_minutes_ahead_of_the_server_clock_is_accepted() -> None:
    valid(event(BASE, occurred_at=(NOW + timedelta(minutes=5)).isoformat()))


@pytest.mark.parametrize("ahead", [timedelta(minutes=5, microseconds=1), timedelta(days=365)])
def test_occurred_at_more_than_5_minutes_ahead_of_the_server_clock_is_refused(ahead: timedelta) -> None:
    assert "occurred_at" in problems(event(BASE, occurred_at=(NOW + ahead).isoformat()))


def test_occurred_at_ahead_is_checked_only_against_a_given_clock() -> None:
    # The scorer decodes records later, without a clock: what ingest accepted stays valid.
    assert isinstance(validate_event(event(BASE, occurred_at="2999-01-01T00:00:00Z")), ActivityEvent)


def test_occurred_at_accepts_lower_case_t_and_z_as_rfc3339_does() -> None:
    valid(event(BASE, occurred_at="2026-11-20t08:00:00z"))


# --- duration_s ---


@pytest.mark.parametrize("duration_s", [0, 1, 86_400, 600.0, 0.0])
def test_duration_s_takes_integers_0_to_86400(duration_s: float) -> None:
    # JSON Schema's integer is a number without a fraction, however it is written.
    result = valid(event(VISIT, duration_s=duration_s)).duration_s
    assert result == duration_s and isinstance(result, int)


@pytest.mark.parametrize(
    "duration_s",
    [True, False, 600.5, "600", -1, 86_401, 10**30, -(10**30), 1e300, None, [600]],
    ids=[
        "true",
        "false",
        "fraction",
        "string",
        "negative",
        "86401",
        "huge",
        "huge-negative",
        "huge-float",
        "null",
        "list",
    ],
)
def test_duration_s_refuses_bools_floats_strings_and_out_of_range(duration_s: object) -> None:
    assert "duration_s" in problems(event(VISIT, duration_s=duration_s))


def test_duration_s_refuses_a_huge_integer_from_json() -> None:
    assert "duration_s" in problems(event(VISIT, duration_s=10**400))


# --- attributes ---


def test_attributes_up_to_4_kib_serialized_are_carried_along() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    attributes = {"k": "x" * (4096 - overhead)}
    assert valid(event(BASE, attributes=attributes)).attributes == attributes


@pytest.mark.parametrize(
    "attributes",
    [{"k": "x" * 4096}, {"k": "é" * 2047}, {str(i): i for i in range(600)}],
    ids=["ascii", "utf-8-bytes-not-chars", "many-keys"],
)
def test_attributes_over_4_kib_serialized_are_refused(attributes: dict[str, Any]) -> None:
    assert "attributes" in problems(event(BASE, attributes=attributes))


@pytest.mark.parametrize("attributes", [[1], "x", 1])
def test_attributes_must_be_an_object(attributes: object) -> None:
    assert "attributes" in problems(event(BASE, attributes=attributes))


def test_attributes_with_a_lone_surrogate_are_refused() -> None:
    assert "attributes" in problems(event(BASE, attributes={"k": "\ud800"}))


def test_attributes_nested_too_deeply_are_refused() -> None:
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    assert problems(event(BASE, attributes={"k": deep})) == {"attributes": "is nested more than 32 levels deep"}


@pytest.mark.parametrize(
    "attributes",
    [
        {"k": "a\x00b"},
        {"a\x00": 1},
        {"k": "\ud800"},
        {"\udfff": 1},
        {"k": [{"deep": ["ok", "\udc00\ud800"]}]},
        {"k": {"x": {"\x00": None}}},
    ],
    ids=["nul-value", "nul-key", "surrogate-value", "surrogate-key", "surrogates-deep", "nul-key-deep"],
)
def test_attributes_holding_what_jsonb_cannot_store_are_refused_at_any_depth(attributes: dict[str, Any]) -> None:
    [(field, reason)] = problems(event(BASE, attributes=attributes)).items()
    assert field == "attributes" and "cannot be stored" in reason, reason
    reason.encode()  # the reason itself travels in an answer and a Kafka header


@pytest.mark.parametrize("number", ["1e400", "1e-1001", "9" * 5000])
def test_attributes_holding_a_number_no_double_holds_are_refused(number: str) -> None:
    raw = {"k": [1, {"n": BadNumber(number)}]}
    assert problems(event(BASE, attributes=raw)) == {
        "attributes": f'at "/k/1/n": holds the number {number[:40]}, out of range (a finite double, 1000 decimals)'
    }


@pytest.mark.parametrize("number", ["1e400", "9" * 5000])
def test_a_duration_no_double_holds_is_named(number: str) -> None:
    assert problems(event(VISIT, duration_s=BadNumber(number))) == {
        "duration_s": f"the number {number[:40]} is out of range"
    }


def test_attributes_nested_deeper_than_python_recurses_are_refused_without_recursion() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert problems(event(BASE, attributes={"k": deep})) == {"attributes": "is nested more than 32 levels deep"}


def test_attributes_at_the_depth_limit_are_carried_along() -> None:
    nested: dict[str, Any] = {}
    for _ in range(31):
        nested = {"k": nested}
    assert valid(event(BASE, attributes=nested)).attributes == nested


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), b"x"], ids=["nan", "inf", "object", "bytes"])
def test_attributes_given_from_python_must_be_json(value: object) -> None:
    assert "attributes" in problems(event(BASE, attributes={"k": value}))


# --- fields ---


def test_an_unknown_field_is_refused() -> None:
    assert problems(event(BASE, duration=5)) == {"duration": "unknown field"}


@pytest.mark.parametrize("field", ["event_id", "type", "member_id", "occurred_at"])
def test_a_missing_required_field_is_refused(field: str) -> None:
    raw = {k: v for k, v in BASE.items() if k != field}
    assert problems(raw) == {field: "required"}


def test_an_unknown_type_is_refused() -> None:
    assert "type" in problems(event(BASE, type="upvote"))


# What each type uses beside the common fields, as the table of SPEC §3/§4 says.
USES: dict[str, set[str]] = {
    "member_joined": set(),
    "visit": {"duration_s"},
    **{k: {"content_id"} for k in ("view", "group_joined", "event_attended", "post", "reply", "comment", "article")},
    "content_removed": {"content_id"},
    **{k: {"content_id", "target_member_id"} for k in ("like", "unlike", "solution_accepted")},
    "badge_awarded": {"content_id"},  # the badge's id
}
SAMPLE: dict[str, Any] = {"content_id": "post_9", "target_member_id": "m-2", "duration_s": 600}


def of_type(kind: str) -> dict[str, Any]:
    return {**BASE, "type": kind, **{field: SAMPLE[field] for field in USES[kind]}}


@pytest.mark.parametrize("kind", USES)
def test_each_type_is_accepted_with_the_fields_it_uses(kind: str) -> None:
    assert valid(of_type(kind)).type == kind


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in USES.items() for f in sorted(fields)])
def test_a_field_the_type_requires_must_be_given(kind: str, field: str) -> None:
    raw = of_type(kind)
    del raw[field]
    assert problems(raw) == {field: f"required for type {kind}"}


@pytest.mark.parametrize(
    ("kind", "field"), [(k, f) for k, fields in USES.items() for f in sorted(set(SAMPLE) - fields)]
)
def test_a_field_the_type_does_not_use_is_refused(kind: str, field: str) -> None:
    raw = {**of_type(kind), field: SAMPLE[field]}
    assert problems(raw) == {field: f"not used by type {kind}"}


def test_a_badge_award_names_a_badge_id() -> None:
    raw = {**of_type("badge_awarded"), "content_id": "Academy Certified"}
    assert set(problems(raw)) == {"content_id"}
    assert valid({**of_type("badge_awarded"), "content_id": "academy_certified"}).content_id == "academy_certified"


def test_every_problem_of_an_event_is_named() -> None:
    raw = {"event_id": "bad id", "type": "like", "member_id": "m-1", "occurred_at": "yesterday", "extra": 1}
    assert set(problems(raw)) == {"event_id", "occurred_at", "extra", "content_id", "target_member_id"}


# --- records ---


def test_a_like_is_published_for_the_member_and_the_author() -> None:
    assert valid(LIKE).subjects() == ["m-1", "m-2"]


def test_a_self_like_is_published_once() -> None:
    assert valid(event(LIKE, target_member_id="m-1")).subjects() == ["m-1"]


def test_an_accepted_solution_is_published_for_the_acceptor_and_the_target() -> None:
    raw = event(LIKE, type="solution_accepted", target_member_id="m-3")
    assert valid(raw).subjects() == ["m-1", "m-3"]


@pytest.mark.parametrize("raw", [BASE, VISIT, event(BASE, type="post", content_id="p")])
def test_an_event_without_a_target_is_published_for_its_member(raw: dict[str, Any]) -> None:
    assert valid(raw).subjects() == ["m-1"]


def test_a_record_value_round_trips_through_validation() -> None:
    original = valid(event(LIKE, occurred_at="2026-11-20T10:00:00+02:00", attributes={"n": [1, None]}))
    assert valid(json.loads(original.to_json())) == original
    assert json.loads(original.to_json())["occurred_at"] == "2026-11-20T08:00:00Z"


# --- the schema ---

SCHEMA = EVENT.json_schema(ref_template="{model}")


def variant(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = SCHEMA["$defs"][SCHEMA["discriminator"]["mapping"][kind]]
    return schema


def test_the_schema_is_a_union_with_one_variant_per_type() -> None:
    assert set(SCHEMA["discriminator"]["mapping"]) == set(USES)
    assert len(SCHEMA["oneOf"]) == len(USES)


@pytest.mark.parametrize("kind", USES)
def test_each_types_schema_requires_what_it_uses_and_forbids_the_rest(kind: str) -> None:
    schema = variant(kind)
    assert set(schema["required"]) == {"event_id", "type", "member_id", "occurred_at"} | USES[kind]
    assert set(schema["properties"]) == {"event_id", "type", "member_id", "occurred_at", "attributes"} | USES[kind]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["type"]["const"] == kind


def test_validating_through_activity_event_applies_the_types_rules() -> None:
    # Code that builds events with ActivityEvent.model_validate gets the type's own model.
    assert isinstance(ActivityEvent.model_validate(LIKE), Like)
    with pytest.raises(ValidationError):
        ActivityEvent.model_validate({k: v for k, v in LIKE.items() if k != "target_member_id"})


def test_every_problem_of_an_event_is_named_in_text_that_encodes() -> None:
    raw = {"\ud800": 1, "event_id": "e\ud800", "type": "post", "member_id": "\x00", "occurred_at": "x"}
    for reason_or_field in (text for item in problems(raw).items() for text in item):
        reason_or_field.encode()


def test_the_events_naming_two_members_are_those_acting_on_an_authors_content() -> None:
    """An erasure digests the erased member's id in the records of exactly these types."""
    assert {"like", "unlike", "solution_accepted"} == NAMING_TWO
