"""What each level looks like and grants (SPEC §10.1), on the pure domain core: cumulative
grants, the grants a level change adds and removes, the rules file's checks, and `how` texts
made from the numbers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.write.rules import body_of
from shared.events import ActivityRecord
from shared.rules import DEFAULT_RULES_PATH, Rules, RulesError, load_rules
from shared.scoring import MemberState, apply, pin, rescore
from shared.scoring import Pin as Held
from tests.unit.test_scoring import NOW, RULES, ev, play


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(DEFAULT_RULES_PATH.read_text())
    return raw


def _with_levels(version: str, levels: list[dict[str, Any]]) -> Rules:
    return Rules.model_validate(_raw() | {"version": version, "levels": levels, "programs": [], "badges": []})


def test_grants_are_cumulative_up_a_tier_and_the_active_tier_holds_the_passive_tiers() -> None:
    # Tiers interleaved on purpose: an active level holds every passive level's grants, those of
    # passive levels ranked above it too; a passive level holds no active level's.
    rules = _with_levels(
        "interleaved",
        [
            {"id": "p1", "name": "P1", "tier": "passive", "grants": ["read_more"]},
            {"id": "a1", "name": "A1", "tier": "active", "active": 1, "grants": ["flag_posts"]},
            {"id": "p2", "name": "P2", "tier": "passive", "passive": 10, "grants": ["send_messages"]},
            {"id": "a2", "name": "A2", "tier": "active", "active": 50, "grants": ["edit_wiki", "pin_topics"]},
        ],
    )
    assert rules.grants("p1") == ("read_more",)
    assert rules.grants("p2") == ("read_more", "send_messages")
    assert rules.grants("a1") == ("read_more", "flag_posts", "send_messages")
    assert rules.grants("a2") == ("read_more", "flag_posts", "send_messages", "edit_wiki", "pin_topics")


def test_the_default_ladder_grants_more_at_each_level_and_takes_nothing_away() -> None:
    held = [set(RULES.grants(level.id)) for level in RULES.levels]
    assert held[0] == set() and "moderate_group" in held[-1]
    for lower, higher, level in zip(held, held[1:], RULES.levels[1:], strict=False):
        assert lower < higher, f"{level.id} adds a privilege"
        assert level.description and level.color, f"{level.id} has its look"


def test_a_promotion_adds_the_grants_of_the_new_level_and_a_demotion_removes_them() -> None:
    _, (first, demoted) = play(ev("article", content_id="a"), ev("content_removed", content_id="a"))
    assert (first.to_level.id, first.grants_removed) == ("general_contributor", ())
    assert first.grants_added == RULES.grants("general_contributor")
    assert (demoted.to_level.id, demoted.grants_added) == ("new_member", ())
    assert demoted.grants_removed == RULES.grants("general_contributor")
    event = demoted.event(RULES.version, NOW)
    assert (event["grants_added"], event["grants_removed"]) == ([], list(RULES.grants("general_contributor")))

    states, _ = play(ev("reply", content_id="r1"))
    ann = states["ann"]
    change = pin(ann, Held("trusted_contributor", "staff"), NOW, RULES)
    assert change is not None
    assert change.grants_added == (
        *("upload_attachments", "edit_wiki", "create_group_messages"),
        *("followed_links", "recategorize_topics", "rename_topics"),
    )
    assert change.grants_removed == ()


def test_a_rescore_removes_what_the_member_held_under_the_rules_it_reached_the_level_under() -> None:
    # Under the old rules Reliable Contributor also granted `old_perk`; the new rules grant it
    # nowhere, and the member drops to General Contributor: the event takes `old_perk` away too.
    old_raw = _raw() | {"version": "old"}
    old_raw["levels"][6] = old_raw["levels"][6] | {"grants": ["create_group_messages", "old_perk"]}
    old_raw["metrics"]["reply"] = old_raw["metrics"]["reply"] | {"points": 100}
    old, new = Rules.model_validate(old_raw), RULES
    records = [ActivityRecord("ann", ev("reply", content_id="r1"))]
    ann = MemberState("ann")
    for record in records:
        apply(ann, record, NOW, old)
    assert ann.level == "reliable_contributor"
    _, change = rescore(ann, records, NOW, new, old)
    assert change is not None and change.to_level.id == "new_contributor"
    assert change.grants_removed == ("upload_attachments", "edit_wiki", "create_group_messages", "old_perk")
    assert change.grants_added == ()


@pytest.mark.parametrize(
    ("level", "message"),
    [
        ({"color": "blue"}, "'blue' is not a colour: write it as #rrggbb"),
        ({"color": "#12345"}, "is not a colour"),
        ({"colour": "#123456"}, "colour\n  Extra inputs are not permitted"),
        ({"grants": ["flag_posts", "flag_posts"]}, "grants named twice: \\['flag_posts'\\]"),
        ({"grants": ["Flag Posts"]}, "grant names are a-z"),
        ({"grants": ["edit_wiki"]}, "grant 'edit_wiki' is given by both general_contributor and trusted_contributor"),
        ({"icon": "javascript:alert(1)"}, "neither an https:// URL nor an icon name"),
        ({"icon": "http://example.org/a.png"}, "neither an https:// URL nor an icon name"),
        ({"description": ""}, "description\n  String should have at least 1 character"),
    ],
)
def test_a_rules_file_with_a_bad_look_or_grant_is_refused_naming_it(
    tmp_path: Any, level: dict[str, Any], message: str
) -> None:
    raw = _raw()
    raw["levels"][8] = {k: v for k, v in raw["levels"][8].items() if k != "grants"} | level
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RulesError, match=message):
        load_rules(path)


def test_icons_are_an_https_url_or_a_name() -> None:
    levels = [dict(level) for level in _raw()["levels"]]
    levels[0]["icon"], levels[1]["icon"] = "https://forum.example.org/icons/seedling.svg", "seedling"
    rules = _with_levels("icons", levels)
    assert (rules.levels[0].icon, rules.levels[1].icon) == ("https://forum.example.org/icons/seedling.svg", "seedling")


def test_how_texts_are_made_from_the_numbers_in_force() -> None:
    assert RULES.how("comment") == "2 points per comment"
    assert RULES.how("browse_time") == "1 point per full 10 minutes browsed in a day"
    raw = _raw() | {"version": "tuned"}
    raw["metrics"]["like_received"] |= {"points": 2, "how": "3 points per like your content receives"}
    raw["metrics"]["reply"] |= {"points": 6}
    raw["metrics"]["browse_time"] |= {"points": 2, "seconds_per_point": 3600}
    tuned = Rules.model_validate(raw)
    assert tuned.how("like_received") == "2 points per like your content receives"  # the file's text is not shown
    assert tuned.how("reply") == "6 points per reply"
    assert tuned.how("browse_time") == "2 points per full hour browsed in a day"


def test_rules_kept_before_levels_had_a_look_read_as_the_same_rules() -> None:
    # A file of the release before SPEC §10.1: `how` texts, no look, no grants.
    raw = _raw() | {"version": "before"}
    for name in raw["metrics"]:
        raw["metrics"][name] |= {"how": f"text of {name}"}
    raw["levels"] = [
        {k: v for k, v in lv.items() if k not in ("description", "color", "grants")} for lv in raw["levels"]
    ]
    body = json.loads(body_of(Rules.model_validate(raw)))
    assert set(body["levels"][0]) == {"id", "name", "tier", "passive", "active", "tenure_days", "rank"}
    assert body["metrics"]["reply"]["how"] == "text of reply"
    assert body_of(Rules.model_validate_json(body_of(Rules.model_validate(raw)))) == body_of(Rules.model_validate(raw))
