"""The level-change event of SPEC §6, as the scorer records and publishes it."""

from __future__ import annotations

import orjson

from services.scorer.outbox import cloud_event
from services.write.outbox import payload
from shared.scoring import Pin, pin
from tests.asyncapi import validator
from tests.unit.test_scoring import NOW, RULES, ev, play


def test_a_level_change_event_has_the_spec_shape() -> None:
    _, changes = play(ev("reply", content_id="r"))
    sent = orjson.loads(payload(changes[0], RULES, NOW))
    assert sent["seq"] == 1 and sent["from_level"] is None and sent["direction"] == "promoted"
    assert sent["to_level"] == {"id": "new_contributor", "name": "New Contributor", "tier": "active", "rank": 5}
    assert sent["cause"] == {"kind": "activity", "event_id": changes[0].cause_event_id, "type": "reply"}
    assert sent["event_id"] == play(ev("reply", content_id="other"))[1][0].event_id  # from member and seq
    assert sent["rules_version"] == RULES.version
    assert sent["occurred_at"].endswith("Z") and sent["emitted_at"] == "2026-11-29T12:00:00Z"


def test_a_reversal_that_lowers_the_level_is_a_demotion() -> None:
    _, changes = play(ev("article", content_id="a"), ev("content_removed", content_id="a"))
    sent = orjson.loads(payload(changes[1], RULES, NOW))
    assert (sent["direction"], sent["from_level"]["rank"], sent["to_level"]["rank"]) == ("demoted", 6, 1)


def test_an_override_carries_its_reason_and_no_event() -> None:
    states, _ = play(ev("reply", content_id="r"))
    change = pin(states["ann"], Pin("new_member", "spam"), NOW, RULES)
    assert change is not None
    sent = orjson.loads(payload(change, RULES, NOW))
    assert (sent["seq"], sent["direction"], sent["to_level"]["rank"]) == (2, "demoted", 1)
    assert sent["cause"] == {"kind": "override", "reason": "spam"}
    assert validator("LevelChange").is_valid(sent)


def test_a_level_change_goes_out_as_a_binary_mode_cloud_event_with_its_stored_bytes() -> None:
    _, changes = play(ev("article", content_id="a"), ev("content_removed", content_id="a"))
    for change, kind in zip(changes, ["promoted", "demoted"], strict=True):
        body = payload(change, RULES, NOW)
        record = cloud_event(body, "urn:test:scorer")
        assert record.value == body and record.key == change.member_id.encode()
        assert record.headers == {
            "ce_specversion": b"1.0",
            "ce_id": change.event_id.encode(),
            "ce_source": b"urn:test:scorer",
            "ce_type": f"community.level.{kind}".encode(),
            "ce_time": b"2026-11-29T12:00:00Z",
            "ce_subject": change.member_id.encode(),
            "content-type": b"application/json",
        }
