"""Badges (SPEC §10.2) on the pure domain core: the catalogue in the rules, when a step earns a
badge, the events, and that however a stream is split into batches the badges granted are
the same, and the independent model's."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.write.rules import body_of
from services.write.sql.outbox import MemberEvent
from services.write.unit_of_work import _in_order
from shared.badges import GRANTED, actions, badge_event, holds_level
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import DEFAULT_RULES_PATH, Rules, default_rules
from shared.scoring import MemberState, Pin, apply_batch, pin, release
from tests.model import Model
from tests.unit.test_scoring import NOW, Store, ev

RULES = default_rules()
RAW = json.loads(DEFAULT_RULES_PATH.read_text())


def _rules(**change: Any) -> Rules:
    return Rules.model_validate(RAW | change)


def _badge(badge_id: str, **change: Any) -> dict[str, Any]:
    return next(b for b in RAW["badges"] if b["id"] == badge_id) | change


def play(*events: ActivityEvent, rules: Rules = RULES) -> dict[str, MemberState]:
    states: dict[str, MemberState] = {}
    apply_batch(states, [ActivityRecord(s, e) for e in events for s in e.subjects()], NOW, rules)
    return states


def earned(state: MemberState) -> list[str]:
    return [e.badge_id for e in state.earned]


# -- the catalogue --


def test_the_default_catalogue_holds_about_a_dozen_badges_each_earned_one_way() -> None:
    assert 10 <= len(RULES.badges) <= 15
    manual = [b for b in RULES.badges if b.manual]
    assert [b.id for b in manual] == ["academy_certified"]
    assert manual[0].link is not None and manual[0].link.startswith("https://")
    assert {b.level for b in RULES.level_badges} == {"trusted_contributor", "community_boss"}
    assert RULES.badge_how(RULES.badge("solutions_10")) == "10 replies accepted as the solution."  # type: ignore[arg-type]
    assert RULES.badge_how(RULES.badge("first_reply")) == "A first reply."  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("badge", "named"),
    [
        (_badge("first_post", manual=True), "exactly one of"),
        (_badge("first_post", count=None), "metric and count go together"),
        (_badge("first_post", metric="karma"), "metric 'karma' is not one of"),
        (_badge("trusted", level="grand_master"), "level 'grand_master' is not a level"),
        (_badge("first_post", count=0), "greater than or equal to 1"),
        (_badge("academy_certified", link="http://academy.example.com"), "is not an https:// URL"),
        (_badge("first_post", id="First Post"), "should match pattern"),
    ],
)
def test_a_bad_badge_is_refused_naming_what_is_wrong(badge: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        _rules(badges=[badge])


def test_badge_ids_are_unique_and_a_metric_that_earns_nothing_counts_no_action() -> None:
    with pytest.raises(ValidationError, match="badge ids must be unique"):
        _rules(badges=[_badge("first_post"), _badge("first_post")])
    metrics = RAW["metrics"] | {"post": RAW["metrics"]["post"] | {"points": 0}}
    with pytest.raises(ValidationError, match="earns no points"):
        _rules(metrics=metrics, badges=[_badge("first_post")])


def test_rules_without_badges_are_kept_as_they_were_before_badges_existed() -> None:
    """A rules version recorded before badges existed still reads as the same rules."""
    bare = _rules(badges=[])
    assert "badges" not in json.loads(body_of(bare))
    kept = json.loads(body_of(RULES))["badges"]
    assert kept[0] == {k: v for k, v in RAW["badges"][0].items()}  # unset fields left out, as written
    assert "manual" not in kept[0] and kept[-1]["manual"] is True


# -- earning --


def test_the_record_that_reaches_a_count_earns_the_badge_once() -> None:
    states = play(ev("reply", content_id="r1"), ev("reply", content_id="r2"))
    (first,) = states["ann"].earned
    assert (first.badge_id, first.cause_kind, first.at) == (
        "first_reply",
        "activity",
        datetime(2026, 11, 20, 9, tzinfo=UTC),
    )


def test_a_count_is_of_actions_standing_after_reversals() -> None:
    """A removal takes a post's action back: a new post crossing the count again earns the badge
    again (the store keeps the first grant). Three groups reach `groups_3`."""
    rules = _rules(badges=[_badge("first_post", count=2)])
    states = play(
        ev("post", content_id="p1"),
        ev("post", content_id="p2"),  # 2: earned
        ev("content_removed", content_id="p2"),  # 1
        ev("post", content_id="p3"),  # 2 again
        rules=rules,
    )
    assert earned(states["ann"]) == ["first_post", "first_post"]
    assert actions(states["ann"].points, rules, "post") == 2
    groups = play(*(ev("group_joined", content_id=f"g{i}") for i in range(3)))
    assert earned(groups["ann"]) == ["groups_3"]


def test_likes_past_the_daily_cap_are_not_scored_actions() -> None:
    rules = _rules(badges=[_badge("likes_received_100", count=21)])
    likes = [ev("like", f"fan{i}", content_id="p1", target_member_id="bob") for i in range(25)]
    assert earned(play(*likes, rules=rules)["bob"]) == []  # 20 scored (60 points), the rest capped
    more = likes + [ev("like", "fan99", at="2026-11-21T09:00:00Z", content_id="p1", target_member_id="bob")]
    assert earned(play(*more, rules=rules)["bob"]) == ["likes_received_100"]


def test_reaching_a_level_earns_its_badge_and_those_below_it_in_one_step() -> None:
    rules = _rules(badges=[_badge("trusted", level="general_contributor"), _badge("boss", level="new_contributor")])
    states = play(ev("article", content_id="a1"), rules=rules)  # 25 active: general contributor
    assert sorted(earned(states["ann"])) == ["boss", "trusted"]
    assert all(e.cause_kind == "level" and e.after_seq == 1 for e in states["ann"].earned)


def test_a_passive_level_badge_is_held_by_any_active_level_and_an_active_one_by_no_passive_level() -> None:
    assert holds_level(RULES, "new_contributor", "senior_member")
    assert not holds_level(RULES, "senior_member", "new_contributor")
    assert holds_level(RULES, "community_boss", "trusted_contributor")
    assert not holds_level(RULES, "respected_contributor", "trusted_contributor")
    assert not holds_level(RULES, None, "new_member")


def test_a_pinned_level_earns_no_badge_and_its_release_to_a_level_that_does_earns_it() -> None:
    """A member pinned high (staff) earns no level badge by the pin, and its release to a level
    that holds one earns it, though the pinned level held it too."""
    rules = _rules(badges=[_badge("trusted", level="general_contributor")])
    state = play(ev("reply", content_id="r1"), rules=rules)["ann"]
    state.earned.clear()
    pin(state, Pin("hyper_boss", "staff"), NOW, rules)
    assert earned(state) == []
    apply_batch({"ann": state}, [ActivityRecord("ann", ev("article", content_id="a1"))], NOW, rules)
    assert earned(state) == []  # the scores reach it, the pin holds the level
    release(state, NOW, rules, "staff left")
    assert earned(state) == ["trusted"]


def test_a_manual_badge_is_earned_by_its_award_and_the_scorer_refuses_any_other() -> None:
    from shared.scoring import manual_badge_refused

    award = ev("badge_awarded", content_id="academy_certified")
    state = play(award)["ann"]
    assert [(e.badge_id, e.cause_kind, e.cause_event_id) for e in state.earned] == [
        ("academy_certified", "ingest", award.event_id)
    ]
    assert manual_badge_refused(ActivityRecord("ann", award), RULES) is None
    auto = ActivityRecord("ann", ev("badge_awarded", content_id="first_post"))
    assert "earned by its criterion" in (manual_badge_refused(auto, RULES) or "")
    unknown = ActivityRecord("ann", ev("badge_awarded", content_id="wizard"))
    assert "have no badge 'wizard'" in (manual_badge_refused(unknown, RULES) or "")
    assert manual_badge_refused(ActivityRecord("ann", ev("post", content_id="p1")), RULES) is None


def test_rules_without_badges_earn_none() -> None:
    states = play(ev("post", content_id="p1"), ev("article", content_id="a1"), rules=_rules(badges=[]))
    assert earned(states["ann"]) == []


# -- events, and their place among the level changes --


def test_a_badge_event_has_an_id_of_its_member_badge_action_and_time() -> None:
    one = badge_event("granted", "ann", {"id": "b", "name": "B"}, NOW, {"kind": "activity"}, "v1", NOW, NOW)
    again = badge_event("granted", "ann", {"id": "b", "name": "B"}, NOW, {"kind": "activity"}, "v1", NOW, NOW)
    revoked = badge_event("revoked", "ann", {"id": "b", "name": "B"}, NOW, {"kind": "operator"}, "v1", NOW, NOW)
    assert one == again and one["event_id"] != revoked["event_id"]
    assert one["granted_at"] == "2026-11-29T12:00:00Z" and one["action"] == "granted"


def test_a_members_badge_events_go_among_its_level_changes_where_they_happened() -> None:
    rules = _rules(badges=[_badge("first_post"), _badge("trusted", level="general_contributor")])
    states2: dict[str, MemberState] = {}
    records = [
        ActivityRecord("ann", ev("post", content_id="p1")),  # first post, then new contributor (seq 1)
        ActivityRecord("ann", ev("post", content_id="p2")),
        ActivityRecord("ann", ev("post", content_id="p3")),  # 30 active: general contributor (seq 2), trusted
    ]
    changes = apply_batch(states2, records, NOW, rules)
    placed = [
        (e.after_seq, MemberEvent("ann", GRANTED, orjson.dumps({"badge": e.badge_id}), NOW))
        for e in states2["ann"].earned
    ]
    ordered = _in_order(changes, [b"change"] * len(changes), placed)
    names = [orjson.loads(e.payload)["badge"] if isinstance(e, MemberEvent) else f"seq {e[0].seq}" for e in ordered]
    assert names == ["first_post", "seq 1", "seq 2", "trusted"]


# -- any split of a stream, and the model --

SMALL = _rules(
    badges=[
        _badge("first_post"),
        _badge("first_reply"),
        _badge("first_solution"),
        _badge("solutions_10", count=2),
        _badge("likes_received_100", count=2),
        _badge("reader_30_days", count=2),
        _badge("events_5", count=2),
        _badge("groups_3", count=2),
        _badge("trusted", level="general_contributor"),
        _badge("boss", level="community_member"),
        _badge("academy_certified"),
    ]
)
SMALL_COUNTS = {
    "first_post": ("post", 1),
    "first_reply": ("reply", 1),
    "first_solution": ("solution_accepted", 1),
    "solutions_10": ("solution_accepted", 2),
    "likes_received_100": ("like_received", 2),
    "reader_30_days": ("visit_day", 2),
    "events_5": ("event_attended", 2),
    "groups_3": ("group_joined", 2),
}
SMALL_LEVELS = {"trusted": 6, "boss": 2}

_members = st.sampled_from(["ann", "bob", "cat"])
_days = st.sampled_from(["2026-11-20T09:00:00Z", "2026-11-21T10:00:00Z", "2026-09-01T00:00:00Z"])
_content = st.sampled_from(["c1", "c2", "c3"])


@st.composite
def _events(draw: st.DrawFn) -> ActivityEvent:
    kind = draw(
        st.sampled_from(
            ["member_joined", "visit", "group_joined", "event_attended", "post", "reply", "article"]
            + ["like", "unlike", "solution_accepted", "content_removed", "badge_awarded"]
        )
    )
    fields: dict[str, Any] = {}
    if kind == "visit":
        fields["duration_s"] = draw(st.integers(0, 9000))
    elif kind == "badge_awarded":
        fields["content_id"] = "academy_certified"
    elif kind != "member_joined":
        fields["content_id"] = draw(_content)
    if kind in ("like", "unlike", "solution_accepted"):
        fields["target_member_id"] = draw(_members)
    return ev(kind, draw(_members), at=draw(_days), **fields)


def _grant(held: dict[str, dict[str, datetime]], states: dict[str, MemberState]) -> None:
    """As the store does: a badge earned that the member has no row of is granted, once."""
    for member, state in states.items():
        for e in state.earned:
            held.setdefault(member, {}).setdefault(e.badge_id, e.at)
        state.earned.clear()


@settings(max_examples=300, deadline=None)
@given(st.lists(_events(), max_size=60), st.lists(st.integers(1, 7), min_size=1, max_size=20))
def test_any_split_of_a_stream_grants_the_same_badges_at_the_same_times_as_the_model(
    events: list[ActivityEvent], sizes: list[int]
) -> None:
    records = [ActivityRecord(s, e) for e in events for s in e.subjects()]
    whole: dict[str, MemberState] = {}
    apply_batch(whole, records, NOW, SMALL)
    whole_held: dict[str, dict[str, datetime]] = {}
    _grant(whole_held, whole)

    store, split_held = Store(), dict[str, dict[str, datetime]]()
    start, i = 0, 0
    while start < len(records):
        batch = records[start : start + sizes[i % len(sizes)]]
        states = store.load(batch)
        apply_batch(states, batch, NOW, SMALL)
        _grant(split_held, states)
        store.save(states)
        start, i = start + len(batch), i + 1

    assert split_held == whole_held
    model = Model(NOW, badge_counts=SMALL_COUNTS, badge_levels=SMALL_LEVELS)
    for event in events:
        model.apply(event.model_dump(mode="json", exclude_none=True))
    assert whole_held == model.badges()
    assert all(dataclasses.replace(s, earned=[]) == s for s in whole.values())
