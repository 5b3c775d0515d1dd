"""The level-change event of SPEC §6, as the scorer records and publishes it."""

from __future__ import annotations

import orjson

from services.scorer.outbox import payload
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
