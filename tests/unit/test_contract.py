"""The AsyncAPI document of the topics: docs/ holds what the API serves, and the schemas in it
take what the services write and refuse what SPEC §6 rules out."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import orjson
import pytest

from services.api import contract
from services.api.app import create_app
from services.write.outbox import payload
from shared.scoring import CauseKind
from tests.asyncapi import DOCUMENT, validator
from tests.unit.test_scoring import NOW, RULES, ev, play


def test_docs_hold_the_document_the_code_builds() -> None:
    assert DOCUMENT.read_bytes() == contract.render(), "run: python -m services.api.contract > docs/asyncapi.json"


async def test_the_api_serves_the_document_and_declares_the_route() -> None:
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app") as client:
        served = await client.get("/v1/asyncapi.json")
        openapi = (await client.get("/openapi.json")).json()
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.content == DOCUMENT.read_bytes()
    assert "get" in openapi["paths"]["/v1/asyncapi.json"]


def test_the_document_names_the_three_topics_and_their_messages() -> None:
    document = contract.document()
    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == {"activity", "level-changes", "activity.dlq"}
    dlq = document["components"]["schemas"]["DeadLetterHeaders"]
    assert set(dlq["properties"]) >= {"source_topic", "source_partition", "source_offset", "reason"}


def _changes() -> list[dict[str, Any]]:
    _, by_activity = play(ev("article", content_id="a"), ev("content_removed", content_id="a"))
    return [orjson.loads(payload(change, RULES, NOW)) for change in by_activity]


def test_level_changes_the_scorer_writes_are_valid() -> None:
    promoted, demoted = _changes()
    for change in (promoted, demoted, demoted | {"cause": {"kind": "tenure"}}):
        validator("LevelChange").validate(change)


def test_every_cause_kind_is_described_and_an_override_needs_its_reason() -> None:
    causes = contract.document()["components"]["schemas"]["LevelChange"]["properties"]["cause"]["oneOf"]
    kinds = {cause["properties"]["kind"]["const"] for cause in causes}
    assert kinds == set(get_args(CauseKind)) | {"override"}
    _, demoted = _changes()
    assert validator("LevelChange").is_valid(demoted | {"cause": {"kind": "override", "reason": "moderation"}})
    assert not validator("LevelChange").is_valid(demoted | {"cause": {"kind": "override"}})


@pytest.mark.parametrize(
    "broken",
    [
        {"direction": "sideways"},
        {"from_level": None},  # a first level is seq 1 and a promotion; this one is neither
        {"seq": 0},
        {"emitted_at": "2026-11-29T12:00:00+01:00"},
        {"cause": {"kind": "activity", "event_id": "e1"}},
        {"extra": 1},
    ],
)
def test_level_changes_spec_rules_out_are_refused(broken: dict[str, Any]) -> None:
    _, demoted = _changes()
    assert not validator("LevelChange").is_valid(demoted | broken)


def test_activity_events_are_held_to_their_type_schema() -> None:
    reply = ev("reply", content_id="r")
    assert validator("ActivityEvent").is_valid(orjson.loads(reply.to_json()))
    assert not validator("ActivityEvent").is_valid(orjson.loads(reply.to_json()) | {"duration_s": 60})


def test_level_changes_carry_the_grants_they_add_and_remove() -> None:
    promoted, demoted = _changes()
    assert promoted["grants_added"] and demoted["grants_removed"] == promoted["grants_added"]
    for field in ("grants_added", "grants_removed"):
        assert not validator("LevelChange").is_valid({k: v for k, v in demoted.items() if k != field})
        assert not validator("LevelChange").is_valid(demoted | {field: ["Not A Grant"]})
