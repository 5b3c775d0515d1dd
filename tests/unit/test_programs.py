"""Programmes (SPEC §11) in the domain: the rules file defines them, intake windows and their
edges, and eligibility on a date from the level history, against the tests' model."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.cli.rules import rules_differences
from services.scorer.outbox import cloud_event
from shared.events import ActivityRecord
from shared.programs import (
    JOINED,
    LEFT,
    PinSpan,
    Step,
    below_programs,
    eligible_level,
    level_at,
    next_intake,
    open_intake,
    pin_spans,
    program_event,
    qualifying_ids,
    window_closes,
)
from shared.rules import DEFAULT_RULES_PATH, Program, RulesError, default_rules, load_rules
from shared.scoring import MemberState, Pin
from tests.asyncapi import validator
from tests.model import LADDER, Model
from tests.unit.test_scoring import NOW, RULES, _events, play_in_batches

BOSS = default_rules().programs[0]


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def step(day: str, seq: int, level: str, hour: int = 12) -> Step:
    found = RULES.level(level)
    return Step(at(day, hour), seq, found.id, found.rank)


def test_the_default_rules_ship_the_community_boss_program() -> None:
    assert BOSS.min_level == "community_boss" and RULES.level(BOSS.min_level).name == "Community Boss"
    assert BOSS.intakes == ("02-01", "07-01") and BOSS.window_days == 14 and not BOSS.pinned_counts


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"min_level": "boss"}, "min_level 'boss' is not a level"),
        ({"intakes": ["02-30"]}, "intake '02-30'"),
        ({"intakes": ["2-1"]}, "intake '2-1'"),
        ({"intakes": ["02-29"]}, "intake '02-29'"),  # not a day of every year
        ({"intakes": ["02-01", "02-01"]}, "intakes repeat"),
        ({"intakes": []}, "intakes"),
        ({"window_days": 0}, "window_days"),
    ],
)
def test_a_programme_the_rules_cannot_run_is_refused_naming_what(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["programs"][0] |= change
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    with pytest.raises(RulesError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_rules(path)


def test_two_programmes_with_one_id_are_refused(tmp_path: Path) -> None:
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["programs"].append(rules["programs"][0])
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    with pytest.raises(RulesError, match="program ids must be unique"):
        load_rules(path)


def test_an_intake_window_holds_its_first_and_last_day_and_not_the_day_after() -> None:
    assert open_intake(BOSS, date(2027, 1, 31)) is None
    assert open_intake(BOSS, date(2027, 2, 1)) == date(2027, 2, 1)  # the first day
    assert open_intake(BOSS, date(2027, 2, 14)) == date(2027, 2, 1)  # the last of 14
    assert window_closes(BOSS, date(2027, 2, 1)) == date(2027, 2, 14)
    assert open_intake(BOSS, date(2027, 2, 15)) is None  # the day after
    assert next_intake(BOSS, date(2027, 2, 15)) == date(2027, 7, 1)
    assert next_intake(BOSS, date(2027, 2, 1)) == date(2027, 2, 1)
    assert next_intake(BOSS, date(2026, 12, 4)) == date(2027, 2, 1)
    assert next_intake(BOSS, date(2027, 7, 2)) == date(2028, 2, 1)


def test_a_window_may_run_into_the_next_year() -> None:
    winter = Program(id="winter", name="Winter", min_level="new_member", intakes=("12-25",), window_days=14)
    assert open_intake(winter, date(2027, 1, 7)) == date(2026, 12, 25)
    assert open_intake(winter, date(2027, 1, 8)) is None
    assert next_intake(winter, date(2027, 1, 8)) == date(2027, 12, 25)


def test_a_member_promoted_on_3_february_was_not_eligible_on_1_february() -> None:
    steps = [step("2027-01-10", 1, "trusted_contributor"), step("2027-02-03", 2, "community_boss")]
    assert eligible_level(BOSS, RULES, steps, [], date(2027, 2, 1)) is None
    assert eligible_level(BOSS, RULES, steps, [], date(2027, 2, 3)) == steps[1]


def test_a_change_late_on_the_intake_date_counts_and_one_at_the_next_midnight_does_not() -> None:
    late = [Step(datetime(2027, 2, 1, 23, 59, 59, 999999, tzinfo=UTC), 1, "community_boss", 10)]
    assert eligible_level(BOSS, RULES, late, [], date(2027, 2, 1)) is not None
    midnight = [Step(datetime(2027, 2, 2, tzinfo=UTC), 1, "community_boss", 10)]
    assert eligible_level(BOSS, RULES, midnight, [], date(2027, 2, 1)) is None


def test_a_member_demoted_before_the_intake_date_is_not_eligible() -> None:
    steps = [step("2027-01-10", 1, "community_boss"), step("2027-01-20", 2, "trusted_contributor")]
    assert eligible_level(BOSS, RULES, steps, [], date(2027, 2, 1)) is None
    assert eligible_level(BOSS, RULES, steps, [], date(2027, 1, 15)) == steps[0]


def test_a_pinned_level_does_not_count_unless_the_programme_says_so() -> None:
    # Staff shown as a Boss: pinned there on 10 January, with an earned level below.
    steps = [step("2027-01-05", 1, "trusted_contributor"), step("2027-01-10", 2, "community_boss")]
    spans = pin_spans([("pin", at("2027-01-10"), None)])
    assert spans == [PinSpan(at("2027-01-10"), None)]
    assert eligible_level(BOSS, RULES, steps, spans, date(2027, 2, 1)) is None
    counting = BOSS.model_copy(update={"pinned_counts": True})
    assert eligible_level(counting, RULES, steps, spans, date(2027, 2, 1)) == steps[1]


def test_under_a_pin_the_earned_level_is_the_one_held_when_it_began_and_a_release_counts() -> None:
    # A Boss pinned at New Member (a spam run), released with a change back to Boss.
    steps = [
        step("2027-01-05", 1, "community_boss"),
        step("2027-01-10", 2, "new_member"),  # the pin's change (override)
        step("2027-02-10", 3, "community_boss"),  # the release's change (override)
    ]
    spans = pin_spans([("pin", at("2027-01-10"), None), ("unpin", at("2027-02-10"), None)])
    assert spans == [PinSpan(at("2027-01-10"), at("2027-02-10"))]
    assert eligible_level(BOSS, RULES, steps, spans, date(2027, 2, 1)) == steps[0]  # earned, under the pin
    assert eligible_level(BOSS, RULES, steps, spans, date(2027, 2, 11)) == steps[2]
    counting = BOSS.model_copy(update={"pinned_counts": True})
    assert eligible_level(counting, RULES, steps, spans, date(2027, 2, 1)) is None  # held: New Member


def test_a_release_that_changes_nothing_leaves_the_level_held_as_the_earned_one() -> None:
    # Pinned at Boss, earns Boss meanwhile, released: no change is recorded at the release.
    steps = [step("2027-01-05", 1, "trusted_contributor"), step("2027-01-10", 2, "community_boss")]
    spans = pin_spans([("pin", at("2027-01-10"), None), ("unpin", at("2027-01-20"), None)])
    assert eligible_level(BOSS, RULES, steps, spans, date(2027, 1, 15)) is None
    assert eligible_level(BOSS, RULES, steps, spans, date(2027, 2, 1)) == steps[1]


def test_a_pin_ends_at_its_time_a_replaced_pin_continues_the_stretch() -> None:
    lines = [
        ("pin", at("2027-01-01"), at("2027-01-05")),
        ("pin", at("2027-01-10"), None),  # the first pin ran out on the 5th
        ("pin", at("2027-01-12"), at("2027-01-20")),  # replaces the pin of the 10th
        ("expire", at("2027-01-21"), at("2027-01-20")),  # the sweep found it a day late
    ]
    assert pin_spans(lines) == [
        PinSpan(at("2027-01-01"), at("2027-01-05")),
        PinSpan(at("2027-01-10"), at("2027-01-20")),
    ]


def test_a_level_of_other_rules_ranks_as_its_change_says() -> None:
    steps = [Step(at("2027-01-05"), 1, "old_boss", 10)]
    assert eligible_level(BOSS, RULES, steps, [], date(2027, 2, 1)) == steps[0]
    assert "old_boss" in qualifying_ids(BOSS, RULES, ["old_boss", "new_member"])
    assert "new_member" not in qualifying_ids(BOSS, RULES, ["new_member"])


def test_a_rescore_reports_enrolled_members_below_the_level_by_their_earned_level() -> None:
    boss = MemberState("ann", points={"article": 1000}, level="community_boss", programs=("community_boss",))
    assert below_programs(boss, RULES, NOW) == []
    fallen = MemberState("bob", points={"article": 500}, level="trusted_contributor", programs=("community_boss",))
    assert below_programs(fallen, RULES, NOW) == ["community_boss"]
    pinned = MemberState(
        "cat",
        points={"article": 500},
        level="community_boss",
        pin=Pin("community_boss", "staff"),
        programs=("community_boss",),
    )
    assert below_programs(pinned, RULES, NOW) == ["community_boss"]
    gone = MemberState("dan", points={"article": 5}, level="new_contributor", programs=("retired",))
    assert below_programs(gone, RULES, NOW) == []  # a programme the rules no longer define


# -- against the model, over any split of a stream --

_DAYS = [date(2026, 8, 31), date(2026, 9, 1), date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_events(), max_size=60),
    st.lists(st.integers(1, 7), min_size=1, max_size=20),
    st.sampled_from([lv for lv in LADDER if 2 <= lv[0] <= 7]),
)
def test_eligibility_on_each_day_equals_the_model_whatever_the_batches(
    events: list[Any], sizes: list[int], least: tuple[int, str, int, int, int]
) -> None:
    program = Program(id="p", name="P", min_level=least[1], intakes=("02-01",), window_days=14)
    records = [ActivityRecord(s, e) for e in events for s in e.subjects()]
    _, changes = play_in_batches(records, sizes)
    model = Model(NOW)
    for event in events:
        model.apply(orjson.loads(event.to_json()))
    steps: dict[str, list[Step]] = {}
    for c in changes:
        steps.setdefault(c.member_id, []).append(Step(c.occurred_at, c.seq, c.to_level.id, c.to_level.rank))
    for day in _DAYS:
        found = {m for m, s in steps.items() if eligible_level(program, RULES, s, [], day)}
        assert found == model.eligible(day, least[0]), day


def test_level_at_takes_the_latest_change_by_when_it_occurred_then_by_seq() -> None:
    # A late record's change (seq 2) occurred before the change recorded first.
    steps = [step("2027-01-20", 1, "community_boss"), step("2027-01-10", 2, "trusted_contributor")]
    assert level_at(steps, [], at("2027-01-15"), False) == steps[1]
    assert level_at(steps, [], at("2027-01-25"), False) == steps[0]
    tied = [step("2027-01-20", 1, "community_boss"), step("2027-01-20", 2, "trusted_contributor")]
    assert level_at(tied, [], at("2027-01-21"), False) == tied[1]
    assert level_at(tied, [], at("2027-01-20") - timedelta(hours=1), False) is None


@pytest.mark.parametrize(("action", "kind"), [("joined", JOINED), ("left", LEFT)])
def test_a_programme_event_goes_out_as_the_asyncapi_document_describes_it(
    action: Literal["joined", "left"], kind: str
) -> None:
    sent = program_event(action, "ann", BOSS.ref(), 7, date(2027, 2, 1), "mod", None, at("2027-02-02"))
    validator("ProgramEvent").validate(sent)
    assert sent["event_id"] == program_event(action, "ann", BOSS.ref(), 7, None, "x", "y", NOW)["event_id"]
    assert sent["event_id"] != program_event(action, "ann", BOSS.ref(), 8, None, "x", "y", NOW)["event_id"]
    record = cloud_event(orjson.dumps(sent), "urn:test:scorer", kind)
    headers = {k: v.decode() for k, v in record.headers.items()}
    validator("ProgramEventHeaders").validate(headers)
    assert (headers["ce_type"], headers["ce_id"], record.key) == (kind, sent["event_id"], b"ann")
    assert not validator("CloudEventHeaders").is_valid(headers)  # not a level change's type


def test_rules_check_names_what_a_file_changes_in_the_programmes() -> None:
    mentors = Program(id="mentors", name="Mentors", min_level="trusted_contributor", intakes=("09-01",), window_days=7)
    new = RULES.model_copy(update={"programs": (BOSS.model_copy(update={"window_days": 21}), mentors)})
    assert rules_differences(RULES, new) == [
        ("program community_boss.window_days", "14", "21"),
        ("program mentors", "absent", "present"),
    ]
    assert rules_differences(new, RULES)[-1] == ("program mentors", "present", "absent")
