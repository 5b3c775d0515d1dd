"""The topics' contract (SPEC §6) as an AsyncAPI 3.0 document, served at /v1/asyncapi.json.

Activity events are described by the models that validate them (shared/events.py); the
level-change payload by a schema written here from SPEC §6. `docs/asyncapi.json` is this
document as printed by `python -m services.api.contract`; a unit test keeps them equal.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any, get_args

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter

from shared.badges import GRANTED as BADGE_GRANTED
from shared.badges import REVOKED as BADGE_REVOKED
from shared.events import EVENT, EventId, MemberId
from shared.programs import JOINED as PROGRAM_JOINED
from shared.programs import LEFT as PROGRAM_LEFT
from shared.rules import GRANT, Tier
from shared.webhooks import ERASED as WEBHOOK_ERASED

_REF = "#/components/schemas/{model}"
_TIMESTAMP = {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"}
_KAFKA = {"bindingVersion": "0.5.0"}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _grants(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "pattern": f"^{GRANT.pattern}$"},
        "uniqueItems": True,
        "description": description,
    }


def _activity_schemas() -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The activity event union and each event type's schema, from the pydantic models; and
    the event types."""
    union = EVENT.json_schema(ref_template=_REF)
    schemas = union.pop("$defs")
    # AsyncAPI's discriminator is the property's name, not OpenAPI's object.
    schemas["ActivityEvent"] = union | {"discriminator": union["discriminator"]["propertyName"]}
    return schemas, sorted(union["discriminator"]["mapping"])


def _level_change_schemas(event_types: list[str]) -> dict[str, dict[str, Any]]:
    """SPEC §6, written out: the payload of a record on the level-changes topic."""
    member_id = TypeAdapter(MemberId).json_schema()
    only_kind = {"type": "object", "additionalProperties": False, "required": ["kind"]}
    return {
        "LevelRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "name", "tier", "rank"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "tier": {"enum": list(get_args(Tier))},
                "rank": {"type": "integer", "minimum": 1},
            },
        },
        "LevelChange": {
            "type": "object",
            "description": "A member's level changed; key: member_id. Dedupe on event_id, order by seq.",
            "additionalProperties": False,
            "required": [
                "event_id",
                "member_id",
                "seq",
                "direction",
                "from_level",
                "to_level",
                "grants_added",
                "grants_removed",
                "active_score",
                "passive_score",
                "cause",
                "rules_version",
                "occurred_at",
                "emitted_at",
            ],
            "properties": {
                "event_id": {"type": "string", "format": "uuid", "description": "derived from member_id and seq"},
                "member_id": member_id,
                "seq": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "the member's level changes 1, 2, 3, … no gaps",
                },
                "direction": {"enum": ["promoted", "demoted"]},
                "from_level": {
                    "anyOf": [{"$ref": _REF.format(model="LevelRef")}, {"type": "null"}],
                    "description": "null for the member's first level (seq 1)",
                },
                "to_level": {"$ref": _REF.format(model="LevelRef")},
                "grants_added": _grants("privileges to_level grants that the member did not hold (SPEC §10.1)"),
                "grants_removed": _grants("privileges the member held that to_level does not grant"),
                "active_score": {"type": "integer"},
                "passive_score": {"type": "integer"},
                "cause": {
                    "oneOf": [
                        {
                            **only_kind,
                            "description": "an activity event moved the member",
                            "required": ["kind", "event_id", "type"],
                            "properties": {
                                "kind": {"const": "activity"},
                                "event_id": TypeAdapter(EventId).json_schema(),
                                "type": {"enum": event_types},
                            },
                        },
                        {**only_kind, "properties": {"kind": {"const": "tenure"}}, "description": "time passed"},
                        {**only_kind, "properties": {"kind": {"const": "rescore"}}, "description": "SPEC §9.1"},
                        {
                            **only_kind,
                            "description": "an operator set the level (SPEC §9.3)",
                            "required": ["kind", "reason"],
                            "properties": {"kind": {"const": "override"}, "reason": {"type": "string", "minLength": 1}},
                        },
                    ]
                },
                "rules_version": {"type": "string"},
                "occurred_at": _TIMESTAMP,
                "emitted_at": _TIMESTAMP | {"description": "also the record's ce_time"},
            },
            # A first level is always a promotion.
            "if": {"properties": {"from_level": {"type": "null"}}},
            "then": {"properties": {"seq": {"const": 1}, "direction": {"const": "promoted"}}},
            "else": {"properties": {"seq": {"minimum": 2}}},
        },
        "CloudEventHeaders": {
            "type": "object",
            "description": "CloudEvents 1.0, Kafka protocol binding, binary content mode",
            "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "content-type"],
            "properties": {
                "ce_specversion": {"const": "1.0"},
                "ce_id": {"type": "string", "description": "the payload's event_id"},
                "ce_source": {
                    "type": "string",
                    "format": "uri-reference",
                    "description": "the scorer's CL_EVENT_SOURCE",
                },
                "ce_type": {"enum": ["community.level.promoted", "community.level.demoted"]},
                "ce_time": _TIMESTAMP | {"description": "the payload's emitted_at"},
                "ce_subject": member_id | {"description": "the payload's member_id"},
                "content-type": {"const": "application/json"},
            },
        },
        "DeadLetterHeaders": {
            "type": "object",
            "required": ["source_topic", "source_partition", "source_offset", "reason"],
            "properties": {
                "source_topic": _string("the topic the record came from"),
                "source_partition": _string("its partition, in decimal"),
                "source_offset": _string("its offset, in decimal"),
                "reason": _string("why it could not be applied (at most 1,000 characters)"),
                "truncated_key_from": _string("present when the key was cut to 1 KiB: its original size"),
                "truncated_value_from": _string("present when the value was cut to 900 KiB: its original size"),
            },
        },
    }


def _channel(topic: str, description: str, message: str) -> dict[str, Any]:
    return {
        "address": topic,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": {"topic": topic, **_KAFKA}},
    }


def _operation(action: str, channel: str, message: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        "summary": summary,
    }


def document() -> dict[str, Any]:
    schemas, event_types = _activity_schemas()
    schemas |= _level_change_schemas(event_types)
    member_key = {"key": TypeAdapter(MemberId).json_schema() | {"description": "the member it is about"}, **_KAFKA}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Community Levels topics",
            "version": "1",
            "description": "What the services write to Kafka (SPEC §6). Topic names are the defaults "
            "(CL_TOPIC_ACTIVITY, CL_TOPIC_LEVEL_CHANGES, CL_TOPIC_DLQ).",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:19092", "protocol": "kafka", "description": "make run"}},
        "channels": {
            "activity": _channel(
                "activity", "One record per member an accepted event changes (a like: two).", "ActivityEvent"
            ),
            "levelChanges": _channel(
                "level-changes",
                "Each level change, at least once, in seq order per member. A null value with no headers "
                "(a tombstone, keyed by the member) means the member was erased (SPEC §9.4): forget what you "
                "hold about them, dedupe state included; later events for the id start a new member at seq 1.",
                "LevelChange",
            ),
            "activityDlq": _channel(
                "activity.dlq",
                "A copy of each activity record the scorer could not apply, with the reason.",
                "DeadLetter",
            ),
        },
        "operations": {
            "publishActivity": _operation("send", "activity", "ActivityEvent", "ingest publishes accepted events"),
            "scoreActivity": _operation("receive", "activity", "ActivityEvent", "the scorer applies them"),
            "publishLevelChange": _operation("send", "levelChanges", "LevelChange", "the scorer's outbox relay"),
            "deadLetter": _operation("send", "activityDlq", "DeadLetter", "the scorer sets aside what it cannot apply"),
        },
        "components": {
            "schemas": schemas,
            "messages": {
                "ActivityEvent": {
                    "contentType": "application/json",
                    "payload": {"$ref": _REF.format(model="ActivityEvent")},
                    "bindings": {"kafka": member_key},
                },
                "LevelChange": {
                    "contentType": "application/json",
                    "headers": {"$ref": _REF.format(model="CloudEventHeaders")},
                    "payload": {"$ref": _REF.format(model="LevelChange")},
                    "bindings": {"kafka": member_key},
                },
                "DeadLetter": {
                    "contentType": "application/octet-stream",
                    "headers": {"$ref": _REF.format(model="DeadLetterHeaders")},
                    "payload": {"description": "the record's value as it came (its head, when truncated)"},
                    "bindings": {"kafka": {"key": {"description": "the record's key as it came"}, **_KAFKA}},
                },
            },
        },
    }


def _with_programs(doc: dict[str, Any]) -> dict[str, Any]:
    """A member joining or leaving a programme (SPEC §11): records on the level-changes topic,
    keyed by the member, in order with the member's level changes."""
    schemas, messages = doc["components"]["schemas"], doc["components"]["messages"]
    headers = orjson.loads(orjson.dumps(schemas["CloudEventHeaders"]))
    headers["properties"]["ce_type"] = {"enum": [PROGRAM_JOINED, PROGRAM_LEFT]}
    schemas["ProgramEventHeaders"] = headers
    schemas["ProgramEvent"] = {
        "type": "object",
        "description": "A member joined or left a programme (by ce_type); key: member_id. Dedupe on event_id.",
        "additionalProperties": False,
        "required": ["event_id", "member_id", "program", "intake", "operator", "reason", "occurred_at", "emitted_at"],
        "properties": {
            "event_id": {"type": "string", "format": "uuid", "description": "derived from the audit line"},
            "member_id": TypeAdapter(MemberId).json_schema(),
            "program": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "name"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
            },
            "intake": {"type": "string", "format": "date", "description": "the intake the member joined from"},
            "operator": _string("who enrolled the member, or took them out"),
            "reason": {"type": ["string", "null"], "description": "why, if the operator said"},
            "occurred_at": _TIMESTAMP,
            "emitted_at": _TIMESTAMP | {"description": "also the record's ce_time"},
        },
    }
    doc["channels"]["levelChanges"]["description"] += (
        " Programme events (ce_type community.program.joined, community.program.left) go here too,"
        " in order with the member's level changes; they have no seq."
    )
    member_key = messages["LevelChange"]["bindings"]
    for name, ce_type in (("ProgramJoined", PROGRAM_JOINED), ("ProgramLeft", PROGRAM_LEFT)):
        messages[name] = {
            "contentType": "application/json",
            "summary": f"ce_type {ce_type}",
            "headers": {"$ref": _REF.format(model="ProgramEventHeaders")},
            "payload": {"$ref": _REF.format(model="ProgramEvent")},
            "bindings": member_key,
        }
        doc["channels"]["levelChanges"]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        doc["operations"]["publishLevelChange"]["messages"].append({"$ref": f"#/channels/levelChanges/messages/{name}"})
    return doc


def _with_badges(doc: dict[str, Any]) -> dict[str, Any]:
    """A badge granted or revoked (SPEC §10.2): records on the level-changes topic, keyed by
    the member, in order with the member's level changes."""
    schemas, messages = doc["components"]["schemas"], doc["components"]["messages"]
    headers = orjson.loads(orjson.dumps(schemas["CloudEventHeaders"]))
    headers["properties"]["ce_type"] = {"enum": [BADGE_GRANTED, BADGE_REVOKED]}
    schemas["BadgeEventHeaders"] = headers
    schemas["BadgeEvent"] = {
        "type": "object",
        "description": "A badge granted or revoked (by ce_type and action); key: member_id. Dedupe on event_id.",
        "additionalProperties": False,
        "required": [
            *("event_id", "member_id", "action", "badge", "granted_at", "cause"),
            *("rules_version", "occurred_at", "emitted_at"),
        ],
        "properties": {
            "event_id": {
                "type": "string",
                "format": "uuid",
                "description": "derived from member, badge, action and time",
            },
            "member_id": TypeAdapter(MemberId).json_schema(),
            "action": {"enum": ["granted", "revoked"]},
            "badge": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "name"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
            },
            "granted_at": _TIMESTAMP | {"description": "when the member earned or was given the badge"},
            "cause": {
                "type": "object",
                "required": ["kind"],
                "properties": {
                    "kind": {
                        "enum": ["activity", "level", "ingest", "operator", "rescore"],
                        "description": "activity: a record met the criterion; level: a level change did;"
                        " ingest: a badge_awarded event; operator: cl badge grant|revoke;"
                        " rescore: rules that dropped the badge",
                    },
                    "event_id": {"type": "string", "description": "the activity event that caused it"},
                    "operator": _string("who granted or revoked it (operator)"),
                    "reason": {"type": ["string", "null"], "description": "why, as the operator said"},
                },
            },
            "rules_version": _string("the rules in force"),
            "occurred_at": _TIMESTAMP,
            "emitted_at": _TIMESTAMP | {"description": "also the record's ce_time"},
        },
    }
    doc["channels"]["levelChanges"]["description"] += (
        " Badge events (ce_type community.badge.granted, community.badge.revoked) go here too,"
        " in order with the member's level changes; they have no seq. A consumer that knows only"
        " level changes skips them by ce_type."
    )
    member_key = messages["LevelChange"]["bindings"]
    for name, ce_type in (("BadgeGranted", BADGE_GRANTED), ("BadgeRevoked", BADGE_REVOKED)):
        messages[name] = {
            "contentType": "application/json",
            "summary": f"ce_type {ce_type}",
            "headers": {"$ref": _REF.format(model="BadgeEventHeaders")},
            "payload": {"$ref": _REF.format(model="BadgeEvent")},
            "bindings": member_key,
        }
        doc["channels"]["levelChanges"]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        doc["operations"]["publishLevelChange"]["messages"].append({"$ref": f"#/channels/levelChanges/messages/{name}"})
    return doc


def _with_webhooks(doc: dict[str, Any]) -> dict[str, Any]:
    """What the webhook dispatcher POSTs to each registered endpoint (SPEC §12, Standard
    Webhooks): the event of the level-changes topic as `data`, signed in the headers."""
    schemas, messages = doc["components"]["schemas"], doc["components"]["messages"]
    signature = r"v1,[A-Za-z0-9+/]+={0,2}"
    schemas["WebhookHeaders"] = {
        "type": "object",
        "description": "Standard Webhooks headers; verify with a Standard Webhooks library and the endpoint's secret",
        "required": ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"],
        "properties": {
            "webhook-id": _string(
                "the event's event_id (ce_id); an erasure's is erased-<partition>-<offset>. The same on every "
                "retry: dedupe on it"
            ),
            "webhook-timestamp": {
                "type": "string",
                "pattern": r"^\d+$",
                "description": "Unix seconds when this attempt was signed (refuse one far from now)",
            },
            "webhook-signature": {
                "type": "string",
                "pattern": f"^{signature}( {signature})*$",
                "description": "HMAC-SHA256 of `id.timestamp.body` under each secret in force: two for 24 hours "
                "after `cl webhook rotate-secret`, one otherwise",
            },
            "content-type": {"const": "application/json"},
        },
    }
    envelope = {"type": "object", "additionalProperties": False, "required": ["type", "timestamp", "data"]}
    at = _TIMESTAMP | {"description": "the record's ce_time (an erasure: when it reached the topic)"}
    level_types = [f"community.level.{direction}" for direction in ("promoted", "demoted")]
    schemas["MemberErased"] = {
        "type": "object",
        "description": "Forget the member: what you hold about them, dedupe state included",
        "additionalProperties": False,
        "required": ["member_id"],
        "properties": {"member_id": TypeAdapter(MemberId).json_schema()},
    }
    schemas["WebhookPayload"] = {
        "description": "The body of each POST: the record's ce_type, its time, and its value byte for byte as data. "
        "Types added to the topic later reach endpoints registered with --events all the same way.",
        "oneOf": [
            envelope
            | {"properties": {"type": {"enum": types}, "timestamp": at, "data": {"$ref": _REF.format(model=model)}}}
            for types, model in (
                (level_types, "LevelChange"),
                ([PROGRAM_JOINED, PROGRAM_LEFT], "ProgramEvent"),
                ([BADGE_GRANTED, BADGE_REVOKED], "BadgeEvent"),
                ([WEBHOOK_ERASED], "MemberErased"),
            )
        ],
    }
    doc["servers"]["webhookEndpoint"] = {
        "host": "{host}",
        "protocol": "https",
        "description": "an endpoint registered with `cl webhook add URL` (a public address unless "
        "CL_WEBHOOK_ALLOW_PRIVATE is set); it answers 2xx once it has the event",
        "variables": {"host": {"description": "the URL's host"}},
    }
    for channel in doc["channels"].values():
        channel["servers"] = [{"$ref": "#/servers/local"}]
    doc["channels"]["webhooks"] = {
        "address": None,
        "description": "The events of level-changes an endpoint takes (--events, less --exclude-cause), POSTed "
        "at least once, each member's in order. 5xx, 408, 429, timeouts and connection errors are retried with "
        "backoff (a Retry-After honoured); another 4xx or a redirect fails the delivery; an endpoint failing for "
        "a day is disabled.",
        "servers": [{"$ref": "#/servers/webhookEndpoint"}],
        "messages": {"WebhookDelivery": {"$ref": "#/components/messages/WebhookDelivery"}},
        "bindings": {"http": {"method": "POST", "bindingVersion": "0.3.0"}},
    }
    messages["WebhookDelivery"] = {
        "contentType": "application/json",
        "headers": {"$ref": _REF.format(model="WebhookHeaders")},
        "payload": {"$ref": _REF.format(model="WebhookPayload")},
    }
    doc["operations"]["deliverWebhook"] = _operation(
        "send", "webhooks", "WebhookDelivery", "the webhook dispatcher POSTs each event to the endpoints that take it"
    )
    doc["info"]["description"] += " And what the webhook dispatcher POSTs to registered endpoints (SPEC §12)."
    return doc


@cache
def render() -> bytes:
    return orjson.dumps(_with_webhooks(_with_badges(_with_programs(document()))), option=orjson.OPT_INDENT_2) + b"\n"


router = APIRouter()


@router.get(
    "/v1/asyncapi.json",
    response_class=Response,
    responses={200: {"description": "the AsyncAPI 3.0 document of the topics", "content": {"application/json": {}}}},
)
def asyncapi() -> Response:
    """The topics' contract: channels, headers and payload schemas."""
    return Response(render(), media_type="application/json")


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
