"""Member answers kept rendered (`services.api.answers.Rendered`) are always those `render`
gives now: a change of the view (any field of it), of the rules in force or of the member's
tenure day gives a new answer."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.api.answers import Rendered, render
from services.api.rules import RulesInForce
from shared.rules import DEFAULT_RULES_PATH, Rules, default_rules

JOINED = datetime(2026, 11, 1, 15, 0, tzinfo=UTC)  # in the afternoon: tenure days turn at 15:00


def view(**changes: Any) -> dict[str, Any]:
    return {
        "member_id": "ann",
        "level_id": "community_member",
        "active_score": 0,
        "passive_score": 12,
        "points": {"visit_day": 6},
        "joined_at": "2026-11-01T15:00:00Z",
        "pinned": None,
        "updated_at": "2026-11-09T10:00:00Z",
        "version": 3,
        "programs": [],
    } | changes


def fresh(v: dict[str, Any], in_force: RulesInForce, now: datetime) -> bytes:
    return orjson.dumps(render(v, in_force.current, now, in_force.known))


def renamed(level_id: str, name: str) -> Rules:
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] += "-renamed"
    next(level for level in rules["levels"] if level["id"] == level_id)["name"] = name
    return Rules.model_validate(rules)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([view(), view(passive_score=60), view(points={"visit_day": 7})]), st.integers(-2, 40)
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 48),
)
def test_every_answer_kept_is_the_one_rendered_now(reads: list[tuple[dict[str, Any], int]], quarter: int) -> None:
    # Reads at any hour, forward and back in time, of views that differ in a field or not.
    in_force = RulesInForce(default_rules())
    rendered = Rendered(in_force)
    for v, hours in reads:
        now = JOINED + timedelta(hours=hours * 6, minutes=quarter * 15)
        got = rendered.answer(v, now)
        assert got.body == fresh(v, in_force, now)
        assert got.etag == f'"{hashlib.sha256(got.body).hexdigest()[:32]}"'


def test_the_tenure_day_turns_at_the_time_of_day_the_member_joined() -> None:
    in_force = RulesInForce(default_rules())
    rendered, v = Rendered(in_force), view()
    day_6 = JOINED + timedelta(days=6, hours=23)  # 14:00 on the 7th day
    before = rendered.answer(v, day_6)
    assert orjson.loads(before.body)["tenure_days"] == 6
    midnight = JOINED + timedelta(days=7) - timedelta(hours=15)
    assert rendered.answer(v, midnight) is before  # a new UTC date, the same tenure
    after = rendered.answer(v, JOINED + timedelta(days=7))
    assert orjson.loads(after.body)["tenure_days"] == 7
    assert after.etag != before.etag
    # With 7 days, the next level no longer lists tenure among what is unmet.
    unmet = [orjson.loads(a.body)["next_level"]["unmet"] for a in (before, after)]
    assert unmet[0] != unmet[1]


def test_a_change_of_the_view_gives_a_new_answer() -> None:
    in_force = RulesInForce(default_rules())
    rendered, now = Rendered(in_force), JOINED + timedelta(days=8)
    first = rendered.answer(view(), now)
    assert rendered.answer(view(), now) is first
    for changed in (view(passive_score=13), view(programs=["community_boss"]), view(level_id="new_member")):
        answer = rendered.answer(changed, now)
        assert answer.body == fresh(changed, in_force, now) != first.body


def test_a_badge_granted_reaches_the_answer() -> None:
    # Only the view's badges change (SPEC §10.2): the answer kept for the view without them is
    # not given again.
    in_force = RulesInForce(default_rules())
    rendered, now = Rendered(in_force), JOINED + timedelta(days=8)
    first = {"id": "first_post", "granted_at": "2026-11-02T09:00:00Z"}
    second = {"id": "academy_certified", "granted_at": "2026-11-03T09:00:00Z"}
    assert orjson.loads(rendered.answer(view(), now).body)["badges"] == []
    one = rendered.answer(view(badges=[first]), now).body
    assert orjson.loads(one)["badges"] == [
        {"id": "first_post", "name": "First Post", "granted_at": first["granted_at"]}
    ]
    two = rendered.answer(view(badges=[first, second]), now).body
    assert [b["id"] for b in orjson.loads(two)["badges"]] == ["first_post", "academy_certified"]
    assert (one, two) == (
        fresh(view(badges=[first]), in_force, now),
        fresh(view(badges=[first, second]), in_force, now),
    )


def test_a_change_of_the_rules_in_force_gives_a_new_answer() -> None:
    in_force = RulesInForce(default_rules())
    rendered, now = Rendered(in_force), JOINED + timedelta(days=8)
    before = rendered.answer(view(), now)
    assert orjson.loads(before.body)["level"]["name"] == "Community Member"
    # As RulesInForce.refresh puts other rules in force.
    in_force.current = renamed("community_member", "Regular")
    in_force.known = {level.id: level for level in in_force.current.levels}
    after = rendered.answer(view(), now)
    assert orjson.loads(after.body)["level"]["name"] == "Regular"
    assert after.body == fresh(view(), in_force, now)


def test_a_change_of_the_earlier_rules_known_gives_a_new_answer() -> None:
    # A level the rules in force lack reads as the earlier rules named it.
    in_force = RulesInForce(default_rules())
    rendered, now = Rendered(in_force), JOINED + timedelta(days=8)
    gone = view(level_id="old_level")
    assert orjson.loads(rendered.answer(gone, now).body)["level"]["name"] == "old_level"
    older = renamed("community_member", "Old Level").levels[1].model_copy(update={"id": "old_level"})
    in_force.known = {**in_force.known, "old_level": older}
    assert orjson.loads(rendered.answer(gone, now).body)["level"]["name"] == "Old Level"


def test_at_most_size_answers_are_kept() -> None:
    in_force = RulesInForce(default_rules())
    rendered, now = Rendered(in_force, size=3), JOINED + timedelta(days=8)
    members = [view(member_id=f"m-{i}") for i in range(10)]
    for v in members + members:
        assert rendered.answer(v, now).body == fresh(v, in_force, now)
    assert len(rendered._answers) == 3
