"""The scoring rules of SPEC §4 and the ladder of §5, row by row, on the pure domain core."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.members import ranked
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import DEFAULT_RULES_PATH, Level, Rules, RulesError, default_rules, load_rules
from shared.scoring import (
    PIN_EXPIRED,
    LevelChange,
    MemberState,
    Pin,
    apply,
    apply_batch,
    facts_needed,
    freed_cap,
    period_end,
    period_points,
    pin,
    reevaluate_tenure,
    release,
    rescore,
    tenure_due_at,
)
from tests.model import Model
from tests.model import board as model_board
from tests.model import period_points as model_period_points

RULES = default_rules()
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
DAY1, DAY2 = "2026-11-20T09:00:00Z", "2026-11-21T09:00:00Z"
_ids = count()


def ev(kind: str, member: str = "ann", at: str = DAY1, **fields: Any) -> ActivityEvent:
    return ActivityEvent.model_validate(
        {"event_id": f"e{next(_ids)}", "type": kind, "member_id": member, "occurred_at": at, **fields}
    )


def _id(rank: int) -> str:
    """The id of the default ladder's level of that rank."""
    return RULES.levels[rank - 1].id


def _rank(of: MemberState | Level | None) -> int | None:
    """The rank, in the default ladder, of a member's level or of a level."""
    if isinstance(of, MemberState):
        return RULES.level(of.level).rank if of.level else None
    return of.rank if of else None


def play(*events: ActivityEvent, now: datetime = NOW) -> tuple[dict[str, MemberState], list[LevelChange]]:
    states: dict[str, MemberState] = {}
    records = [ActivityRecord(s, e) for e in events for s in e.subjects()]
    return states, apply_batch(states, records, now, RULES)


def points(*events: ActivityEvent, member: str = "ann") -> dict[str, int]:
    return play(*events)[0][member].points


# -- passive activity --


def test_visit_earns_visit_day_once_a_day_and_browse_time_per_full_600_seconds() -> None:
    got = points(ev("visit", duration_s=599), ev("visit", duration_s=1), ev("visit", at=DAY2, duration_s=1199))
    assert got == {"visit_day": 4, "browse_time": 2}


def test_browse_time_is_capped_at_12_a_day() -> None:
    assert points(ev("visit", duration_s=86_400), ev("visit", duration_s=600))["browse_time"] == 12


def test_a_view_counts_once_per_content_and_day() -> None:
    assert points(ev("view", content_id="a"), ev("view", content_id="a"), ev("view", at=DAY2, content_id="a")) == {
        "view": 2
    }


def test_views_are_capped_at_25_a_day() -> None:
    assert points(*(ev("view", content_id=f"a{i}") for i in range(30))) == {"view": 25}


def test_groups_and_events_count_once_each() -> None:
    got = points(
        ev("group_joined", content_id="g"),
        ev("group_joined", at=DAY2, content_id="g"),
        ev("event_attended", content_id="x"),
        ev("event_attended", content_id="x"),
    )
    assert got == {"group_joined": 5, "event_attended": 10}


# -- contributions --


@pytest.mark.parametrize(("kind", "earned"), [("post", 10), ("reply", 5), ("comment", 2), ("article", 25)])
def test_each_contribution_earns_its_points(kind: str, earned: int) -> None:
    assert points(ev(kind, content_id="c")) == {kind: earned}


def test_a_content_id_is_created_once_even_after_removal() -> None:
    got = points(
        ev("post", content_id="c"),
        ev("reply", content_id="c"),
        ev("content_removed", content_id="c"),
        ev("article", content_id="c"),
    )
    assert got == {}


def test_comments_are_capped_at_20_points_a_day() -> None:
    assert points(*(ev("comment", content_id=f"c{i}") for i in range(11))) == {"comment": 20}


def test_removal_frees_room_under_the_cap_of_the_creation_day() -> None:
    got = points(
        *(ev("comment", content_id=f"c{i}") for i in range(10)),
        ev("content_removed", at=DAY2, content_id="c0"),
        ev("comment", content_id="late"),
    )
    assert got == {"comment": 20}


def test_removal_counts_once_and_only_for_created_content() -> None:
    got = points(
        ev("post", content_id="p"),
        ev("content_removed", content_id="p"),
        ev("content_removed", content_id="p"),
        ev("content_removed", content_id="never"),
        ev("post", content_id="q"),
    )
    assert got == {"post": 10}


# -- likes --


def like(kind: str = "like", member: str = "ann", content: str = "p", target: str = "bob", at: str = DAY1) -> Any:
    return ev(kind, member, at=at, content_id=content, target_member_id=target)


def test_a_like_earns_both_sides() -> None:
    states, _ = play(like())
    assert (states["ann"].points, states["bob"].points) == ({"like_given": 1}, {"like_received": 3})


def test_a_self_like_earns_nothing_and_its_unlike_takes_nothing() -> None:
    states, _ = play(ev("post", "bob", content_id="p"), like(member="bob"), like("unlike", member="bob"))
    assert states["bob"].points == {"post": 10}


def test_one_like_per_member_and_content_counts_until_unliked() -> None:
    states, _ = play(like(), like(), like("unlike"), like())
    assert (states["ann"].points, states["bob"].points) == ({"like_given": 1}, {"like_received": 3})


def test_an_unlike_without_a_counted_like_has_no_effect() -> None:
    states, _ = play(like("unlike"))
    assert states["ann"].points == states["bob"].points == {}


def test_likes_given_are_capped_at_20_a_day() -> None:
    assert points(*(like(content=f"p{i}") for i in range(25))) == {"like_given": 20}


def test_likes_received_are_capped_at_60_a_day() -> None:
    assert points(*(like(member=f"fan{i}") for i in range(25)), member="bob") == {"like_received": 60}


def test_a_like_over_the_cap_still_counts_and_its_unlike_frees_nothing() -> None:
    likes = [like(content=f"p{i}") for i in range(21)]  # p20 counts with 0 points
    got = points(*likes, like(content="p20"), like("unlike", content="p20"), like(content="p99"))
    assert got == {"like_given": 20}


def test_an_unlike_frees_room_under_the_cap_of_the_liked_day() -> None:
    got = points(
        *(like(content=f"p{i}") for i in range(20)),
        like("unlike", content="p0", at=DAY2),
        like(content="again"),  # the first day has room again
        like(content="more", at=DAY2),  # the second day's cap was never touched
    )
    assert got == {"like_given": 21}


def test_likes_and_accepted_solutions_stay_when_content_is_removed() -> None:
    states, _ = play(
        ev("reply", "bob", content_id="r"),
        like(content="r"),
        ev("solution_accepted", "ann", content_id="r", target_member_id="bob"),
        ev("content_removed", "bob", content_id="r"),
    )
    assert states["bob"].points == {"like_received": 3, "solution_accepted": 15}


# -- accepted solutions --


def test_a_solution_earns_the_author_once_per_content_and_never_the_accepter() -> None:
    states, _ = play(
        ev("solution_accepted", "ann", content_id="r", target_member_id="bob"),
        ev("solution_accepted", "cat", content_id="r", target_member_id="bob"),
        ev("solution_accepted", "bob", content_id="r2", target_member_id="bob"),
    )
    assert states["bob"].points == {"solution_accepted": 15}
    assert states["ann"].points == states["cat"].points == {}


# -- joining and tenure --


def test_joined_at_is_the_earliest_member_joined_else_the_earliest_event() -> None:
    states, _ = play(ev("view", content_id="a", at=DAY2), ev("view", content_id="b", at=DAY1))
    assert states["ann"].joined_at == datetime(2026, 11, 20, 9, tzinfo=UTC)
    states, _ = play(ev("view", content_id="a", at=DAY1), ev("member_joined", at="2026-11-25T00:00:00Z"))
    assert states["ann"].joined_at == datetime(2026, 11, 25, tzinfo=UTC)


def test_a_target_exists_and_has_joined_from_the_event_that_names_it() -> None:
    states, changes = play(like("unlike"))
    assert states["bob"].joined_at == datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert [(c.member_id, c.to_level.rank) for c in changes] == [("ann", 1), ("bob", 1)]


@pytest.mark.parametrize(
    ("passive_events", "tenure", "rank"),
    [
        (2, timedelta(days=7), 2),  # 10 passive, exactly 7 days
        (2, timedelta(days=7) - timedelta(seconds=1), 1),  # a second short of 7 whole days
        (10, timedelta(days=30), 3),
        (10, timedelta(days=29, hours=23), 2),
        (40, timedelta(days=90), 4),
        (40, timedelta(days=89), 3),
        (1, timedelta(days=400), 1),  # tenure alone is not enough
    ],
)
def test_passive_levels_need_both_points_and_tenure(passive_events: int, tenure: timedelta, rank: int) -> None:
    joined = NOW - tenure
    events = [ev("member_joined", at=joined.isoformat())]
    events += [ev("group_joined", content_id=f"g{i}") for i in range(passive_events)]  # 5 points each
    states, _ = play(*events)
    assert _rank(states["ann"]) == rank


def test_any_active_point_outranks_every_passive_level() -> None:
    events = [ev("member_joined", at="2020-01-01T00:00:00Z")]
    events += [ev("event_attended", content_id=f"x{i}") for i in range(30)]
    states, changes = play(*events, ev("comment", content_id="c"))
    assert _rank(states["ann"]) == 5
    assert [(_rank(c.from_level), c.to_level.rank) for c in changes] == [(None, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_a_reversal_can_demote_a_member() -> None:
    _, changes = play(ev("article", content_id="a"), ev("content_removed", content_id="a"))
    assert [(_rank(c.from_level), c.to_level.rank) for c in changes] == [(None, 6), (6, 1)]


def test_tenure_alone_promotes_when_due_and_not_before() -> None:
    joined = NOW - timedelta(days=6)
    states, _ = play(
        ev("member_joined", at=joined.isoformat()),
        ev("group_joined", content_id="g1"),
        ev("group_joined", content_id="g2"),
    )
    ann = states["ann"]
    due = tenure_due_at(ann, RULES)
    assert due == joined + timedelta(days=7)
    assert reevaluate_tenure(ann, due - timedelta(seconds=1), RULES) is None
    change = reevaluate_tenure(ann, due, RULES)
    assert change is not None and (_rank(change.from_level), change.to_level.rank, change.cause_kind) == (
        1,
        2,
        "tenure",
    )
    assert change.occurred_at == due
    assert tenure_due_at(ann, RULES) is None  # 10 passive points: no higher level is in reach


def test_tenure_never_promotes_an_active_member() -> None:
    states, _ = play(ev("member_joined", at=NOW.isoformat()), ev("reply", content_id="r"))
    assert tenure_due_at(states["ann"], RULES) is None


# -- pins (SPEC §9.3) --


def test_a_pin_holds_the_level_while_the_scores_move() -> None:
    states, _ = play(ev("reply", content_id="r1"))
    ann = states["ann"]
    change = pin(ann, Pin(_id(1), "spam"), NOW, RULES)
    assert change is not None
    assert (change.seq, _rank(change.from_level), change.to_level.rank, change.cause_kind, change.cause_reason) == (
        2,
        5,
        1,
        "override",
        "spam",
    )
    assert not change.promoted and change.occurred_at == NOW and _rank(ann) == 1
    for i in range(30):  # 150 active points: Reliable Contributor if it were not pinned
        assert apply(ann, ActivityRecord("ann", ev("reply", content_id=f"more{i}")), NOW, RULES) is None
    assert ann.scores(RULES) == (155, 0) and _rank(ann) == 1 and ann.seq == 2


def test_a_pin_at_the_present_level_is_no_level_change_but_still_holds_it() -> None:
    states, _ = play(ev("reply", content_id="r1"))
    ann = states["ann"]
    assert pin(ann, Pin(_id(5), "held"), NOW, RULES) is None
    assert ann.pin == Pin(_id(5), "held") and ann.seq == 1
    for i in range(5):
        apply(ann, ActivityRecord("ann", ev("reply", content_id=f"more{i}")), NOW, RULES)
    assert _rank(ann) == 5


def test_releasing_a_pin_returns_to_the_scored_level_with_the_next_seq() -> None:
    states, _ = play(ev("reply", content_id="r1"))
    ann = states["ann"]
    pin(ann, Pin(_id(10), "staff"), NOW, RULES)
    apply(ann, ActivityRecord("ann", ev("article", content_id="a1")), NOW, RULES)  # 35 active points
    change = release(ann, NOW, RULES, "no longer staff")
    assert change is not None
    assert (change.seq, _rank(change.from_level), change.to_level.rank, change.cause_kind, change.cause_reason) == (
        3,
        10,
        6,
        "override",
        "no longer staff",
    )
    assert ann.pin is None and _rank(ann) == 6
    assert (
        change.event_id
        != LevelChange("ann", 2, RULES.levels[4], RULES.levels[9], 0, 0, "override", None, None, NOW).event_id
    )
    assert release(ann, NOW, RULES, "again") is None  # not pinned, level as scored: nothing to change


def test_a_pin_is_refused_for_a_member_without_a_level_a_rank_off_the_ladder_or_an_end_in_the_past() -> None:
    with pytest.raises(ValueError, match="no level yet"):
        pin(MemberState("nobody"), Pin(_id(1), "x"), NOW, RULES)
    states, _ = play(ev("reply", content_id="r1"))
    with pytest.raises(ValueError, match="have no level 'grand_boss'"):
        pin(states["ann"], Pin("grand_boss", "x"), NOW, RULES)
    with pytest.raises(ValueError, match="before it begins"):
        pin(states["ann"], Pin(_id(1), "x", NOW), NOW, RULES)
    assert states["ann"].pin is None and _rank(states["ann"]) == 5


def test_a_pin_with_an_end_is_due_then_and_expires_through_the_tenure_sweep() -> None:
    joined = NOW - timedelta(days=29, hours=12)
    states, _ = play(
        ev("member_joined", at=joined.isoformat()),
        *(ev("group_joined", content_id=f"g{i}") for i in range(10)),  # 50 passive points
    )
    ann = states["ann"]
    assert _rank(ann) == 2 and tenure_due_at(ann, RULES) == joined + timedelta(days=30)
    until = NOW + timedelta(days=1)  # by then tenure allows Established Member
    pin(ann, Pin(_id(1), "held", until), NOW, RULES)
    assert tenure_due_at(ann, RULES) == until
    assert reevaluate_tenure(ann, until - timedelta(seconds=1), RULES) is None and _rank(ann) == 1
    change = reevaluate_tenure(ann, until, RULES)
    assert change is not None
    assert (_rank(change.from_level), change.to_level.rank, change.cause_kind, change.cause_reason) == (
        1,
        3,
        "override",
        PIN_EXPIRED,
    )
    assert change.occurred_at == until and ann.pin is None
    assert tenure_due_at(ann, RULES) is None  # Senior Member needs 200 passive points


def test_a_pin_without_an_end_is_never_due() -> None:
    joined = NOW - timedelta(days=6)
    states, _ = play(ev("member_joined", at=joined.isoformat()), ev("group_joined", content_id="g1"))
    ann = states["ann"]
    pin(ann, Pin(_id(1), "held"), NOW, RULES)
    ann.points["group_joined"] = 10
    assert tenure_due_at(ann, RULES) is None
    assert reevaluate_tenure(ann, NOW + timedelta(days=400), RULES) is None and _rank(ann) == 1


# -- rules file --


def test_an_invalid_rules_file_is_refused_naming_the_problem(tmp_path: Path) -> None:
    raw = json.loads(Path("shared/rules/default.json").read_text())
    del raw["metrics"]["comment"]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RulesError, match="missing \\['comment'\\]"):
        load_rules(path)


# -- batching --

_members = st.sampled_from(["ann", "bob", "cat"])
_days = st.sampled_from(["2026-11-20T09:00:00Z", "2026-11-21T10:00:00Z", "2026-09-01T00:00:00Z"])
_content = st.sampled_from(["c1", "c2", "c3"])


@st.composite
def _events(draw: st.DrawFn) -> ActivityEvent:
    kind = draw(
        st.sampled_from(
            ["member_joined", "visit", "view", "group_joined", "post", "reply", "comment", "article"]
            + ["like", "unlike", "solution_accepted", "content_removed"]
        )
    )
    fields: dict[str, Any] = {}
    if kind == "visit":
        fields["duration_s"] = draw(st.integers(0, 9000))
    elif kind != "member_joined":
        fields["content_id"] = draw(_content)
    if kind in ("like", "unlike", "solution_accepted"):
        fields["target_member_id"] = draw(_members)
    return ev(kind, draw(_members), at=draw(_days), **fields)


class Store:
    """What the scorer keeps between batches: each member's figures, and facts as separate
    rows, of which a batch gets only those its records name (as `services.write.sql.members` loads them)."""

    def __init__(self) -> None:
        self.members: dict[str, MemberState] = {}
        self.facts: dict[tuple[str, str], str] = {}  # (member, key) -> JSON value

    def load(self, records: list[ActivityRecord]) -> dict[str, MemberState]:
        states = {m: dataclasses.replace(s, points=dict(s.points), facts={}) for m, s in self.members.items()}
        wanted = facts_needed(records)
        for _ in range(2):  # the named facts, then the caps their reversal frees
            for member, keys in wanted.items():
                for key in keys:
                    if (member, key) in self.facts and member in states:
                        states[member].facts[key] = json.loads(self.facts[(member, key)])
            wanted = {m: {c for k, v in s.facts.items() if (c := freed_cap(k, v))} for m, s in states.items()}
        self.loaded = {(m, k) for m, s in states.items() for k in s.facts}
        return states

    def save(self, states: dict[str, MemberState]) -> None:
        for member, state in states.items():
            self.members[member] = dataclasses.replace(state, points=dict(state.points), facts={})
            self.facts |= {(member, k): json.dumps(v) for k, v in state.facts.items()}
        for member, key in self.loaded:
            if key not in states[member].facts:
                del self.facts[(member, key)]


def play_in_batches(records: list[ActivityRecord], sizes: list[int]) -> tuple[Store, list[LevelChange]]:
    """As the scorer does: batches of the sizes given (in turn), each starting from the figures
    stored after the last, and only the facts its records name."""
    store = Store()
    changes: list[LevelChange] = []
    start, i = 0, 0
    while start < len(records):
        batch = records[start : start + sizes[i % len(sizes)]]
        states = store.load(batch)
        changes += apply_batch(states, batch, NOW, RULES)
        store.save(states)
        start, i = start + len(batch), i + 1
    return store, changes


@settings(max_examples=300, deadline=None)
@given(st.lists(_events(), max_size=60), st.lists(st.integers(1, 7), min_size=1, max_size=20))
def test_splitting_a_stream_into_batches_changes_nothing(events: list[ActivityEvent], sizes: list[int]) -> None:
    records = [ActivityRecord(s, e) for e in events for s in e.subjects()]
    whole: dict[str, MemberState] = {}
    whole_changes = apply_batch(whole, records, NOW, RULES)

    store, split_changes = play_in_batches(records, sizes)

    assert split_changes == whole_changes
    for member, state in whole.items():
        assert store.members[member] == dataclasses.replace(state, facts={})
        assert {k: json.loads(v) for (m, k), v in store.facts.items() if m == member} == state.facts


def test_views_past_the_days_cap_are_not_kept() -> None:
    states, _ = play(*(ev("view", content_id=f"t{i}") for i in range(40)))
    views = [key for key in states["ann"].facts if key.startswith("view|")]
    assert len(views) == RULES.metrics["view"].daily_cap
    assert states["ann"].points["view"] == RULES.metrics["view"].daily_cap


def test_a_batch_needs_only_the_facts_its_records_name() -> None:
    history = [
        ev("view", content_id=f"t{i}", at=f"2026-{1 + i % 10:02d}-{1 + i % 28:02d}T09:00:00Z") for i in range(500)
    ]
    states, _ = play(*history, ev("post", content_id="p1"))
    assert len(states["ann"].facts) > 250
    batch = [ActivityRecord("ann", ev("like", "bob", content_id="p1", target_member_id="ann"))]
    assert facts_needed(batch) == {"ann": {"like_received|bob|p1", "cap|like_received|2026-11-20"}}


def test_points_count_in_the_month_and_week_of_the_day_they_were_earned() -> None:
    # 2026-11-30 is a Monday (ISO week 49); 2026-11-29 a Sunday (week 48), in November too.
    states, _ = play(
        ev("reply", content_id="r1", at="2026-11-29T10:00:00Z"),
        ev("like", "bob", content_id="r1", target_member_id="ann", at="2026-11-29T11:00:00Z"),
        ev("view", content_id="t1", at="2026-12-01T10:00:00Z"),
        ev("unlike", "bob", content_id="r1", target_member_id="ann", at="2026-12-01T12:00:00Z"),
    )
    assert period_points(states["ann"].moves, RULES) == {
        ("active", "month:2026-11"): 5,  # the reply; the like received and its unlike cancel out
        ("active", "week:2026-W48"): 5,
        ("passive", "month:2026-12"): 1,
        ("passive", "week:2026-W49"): 1,
        ("active", "year:2026"): 5,
        ("passive", "year:2026"): 1,
    }
    assert period_points(states["bob"].moves, RULES) == {}  # liked and unliked: nothing left anywhere


def test_a_like_on_31_december_reversed_on_2_january_counts_against_the_old_year() -> None:
    states, _ = play(
        ev("reply", content_id="r1", at="2025-12-30T10:00:00Z"),
        ev("like", "bob", content_id="r1", target_member_id="ann", at="2025-12-31T23:00:00Z"),
        ev("reply", content_id="r2", at="2026-01-02T09:00:00Z"),
        ev("unlike", "bob", content_id="r1", target_member_id="ann", at="2026-01-02T10:00:00Z"),
    )
    # ISO week 2026-W01 runs from Monday 29 December 2025: it holds all four days.
    assert period_points(states["ann"].moves, RULES) == {
        ("active", "year:2025"): 5,  # the reply; the like received taken back out of 2025
        ("active", "month:2025-12"): 5,
        ("active", "year:2026"): 5,  # the reply of 2 January; the unlike takes nothing from 2026
        ("active", "month:2026-01"): 5,
        ("active", "week:2026-W01"): 10,
    }


def test_accepted_solutions_count_on_a_board_of_their_own_in_each_period() -> None:
    states, _ = play(
        ev("reply", content_id="r1", at="2026-11-29T10:00:00Z"),
        ev("solution_accepted", "bob", content_id="r1", target_member_id="ann", at="2026-11-29T11:00:00Z"),
    )
    by = period_points(states["ann"].moves, RULES)
    assert {period: n for (board, period), n in by.items() if board == "solution_accepted"} == {
        "year:2026": 15,
        "month:2026-11": 15,
        "week:2026-W48": 15,
    }
    assert by[("active", "year:2026")] == 20  # and in the tier, as ever


def test_a_period_ends_at_utc_midnight_after_its_last_day() -> None:
    assert period_end("month:2026-11") == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month:2026-12") == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end("week:2026-W48") == datetime(2026, 11, 30, tzinfo=UTC)  # Sunday the 29th is its last day
    assert period_end("week:2026-W53") == datetime(2027, 1, 4, tzinfo=UTC)  # 2026 has 53 ISO weeks


def _tuned(**points: int) -> Rules:
    raw = json.loads(Path(DEFAULT_RULES_PATH).read_text())
    raw["version"] = "tuned"
    for metric, n in points.items():
        raw["metrics"][metric]["points"] = n
    return Rules.model_validate(raw)


def test_rescore_replays_under_new_rules_keeping_the_history_and_one_rescore_change() -> None:
    events = [ev("reply", content_id="r1"), ev("like", member="bob", content_id="r1", target_member_id="ann")]
    states, changes = play(*events)
    ann = states["ann"]
    assert (_rank(ann), ann.seq, ann.scores(RULES)) == (5, 1, (8, 0))
    records = [ActivityRecord("ann", e) for e in events]
    tuned = _tuned(reply=30)

    rescored, change = rescore(ann, records, NOW, tuned, RULES)
    assert rescored.scores(tuned) == (33, 0) and rescored.rules_version == "tuned"
    assert rescored.facts == ann.facts | {"created|r1": ["reply", "2026-11-20", 30, False]}
    assert change is not None and (change.seq, _rank(change.from_level), change.to_level.rank, change.cause_kind) == (
        2,
        5,
        6,
        "rescore",
    )
    assert sorted(rescored.moves) == [("like_received", "2026-11-20", 3), ("reply", "2026-11-20", 30)]

    same, none = rescore(ann, records, NOW, _tuned(view=2), RULES)  # nothing ann did counts differently
    assert none is None and (_rank(same), same.seq, same.points) == (_rank(ann), ann.seq, ann.points)


def test_rescore_keeps_a_pinned_level() -> None:
    states, _ = play(ev("reply", content_id="r1"))
    ann = states["ann"]
    assert pin(ann, Pin(_id(1), "held"), NOW, RULES) is not None
    rescored, change = rescore(ann, [ActivityRecord("ann", ev("reply", content_id="r1"))], NOW, _tuned(reply=30), RULES)
    assert change is None and _rank(rescored) == 1 and rescored.pin == Pin(_id(1), "held")
    assert rescored.scores(RULES) == (30, 0)


def _ladder(version: str, ids: list[str], **active: int) -> Rules:
    """The default rules with the levels `ids` in that order, and other active thresholds."""
    raw = json.loads(Path(DEFAULT_RULES_PATH).read_text())
    by_id = {level["id"]: level for level in raw["levels"]}
    raw["version"], raw["levels"] = (
        version,
        [{**by_id[i], **({"active": active[i]} if i in active else {})} for i in ids],
    )
    return Rules.model_validate(raw)


IDS = [level.id for level in RULES.levels]


def test_a_rescore_to_a_shorter_ladder_moves_a_member_above_its_top_to_a_level_of_it() -> None:
    easy = _ladder("easy", IDS, **{i: 5 for i in IDS[4:]})  # 5 active points reach Hyper Boss
    states, _ = play(ev("reply", content_id="r1"))
    ann, records = states["ann"], [ActivityRecord("ann", ev("reply", content_id="r1"))]
    ann, change = rescore(ann, records, NOW, easy, RULES)
    assert ann.level == "hyper_boss" and change is not None

    short = _ladder("short", IDS[:12])
    rescored, change = rescore(ann, records, NOW, short, easy)
    assert rescored.level == "new_contributor"
    assert change is not None and change.cause_kind == "rescore" and not change.promoted
    assert (change.from_level, change.to_level) == (easy.level("hyper_boss"), short.level("new_contributor"))
    assert change.from_level is not None and change.from_level.rank == 14 and short.find("hyper_boss") is None


def test_a_reordered_ladder_changes_the_level_by_id_even_at_the_same_rank() -> None:
    states, _ = play(ev("reply", content_id="r1"))
    ann, records = states["ann"], [ActivityRecord("ann", ev("reply", content_id="r1"))]
    assert ann.level == "new_contributor" and RULES.level("new_contributor").rank == 5
    # Rank 5 is now General Contributor, which 5 active points reach; New Contributor moves up.
    swapped = _ladder("swapped", [*IDS[:4], IDS[5], IDS[4], *IDS[6:]], general_contributor=5, new_contributor=30)
    rescored, change = rescore(ann, records, NOW, swapped, RULES)
    assert rescored.level == "general_contributor"
    assert change is not None and change.to_level == swapped.level("general_contributor")
    # The same level at another rank is no level change.
    moved = _ladder("moved", [*IDS[:4], IDS[5], IDS[4], *IDS[6:]], general_contributor=30, new_contributor=5)
    rescored, change = rescore(ann, records, NOW, moved, RULES)
    assert change is None and rescored.level == "new_contributor" and moved.level("new_contributor").rank == 6


def test_a_pin_names_a_level_of_the_rules_in_force_and_tenure_reads_a_level_it_lacks_as_below_all() -> None:
    states, _ = play(ev("reply", content_id="r1"))
    short = _ladder("short", IDS[:12])
    with pytest.raises(ValueError, match="have no level 'hyper_boss'"):
        pin(states["ann"], Pin("hyper_boss", "staff"), NOW, short)
    assert short.next_level("hyper_boss") is None and short.next_level("new_member") == short.levels[1]
    # Due at once: the entry level is in reach, so the tenure sweep settles the member on this ladder.
    assert short.tenure_due_at(0, 10, "hyper_boss", NOW) == NOW


# -- periods and boards, against the model --

_year_end = st.sampled_from(
    ["2025-12-29T09:00:00Z", "2025-12-31T23:59:00Z", "2026-01-01T00:00:00Z", "2026-01-02T10:00:00Z"]
)


@st.composite
def _year_end_events(draw: st.DrawFn) -> ActivityEvent:
    """Events around a new year, likes, unlikes and accepted solutions among them."""
    event = draw(_events())
    return ActivityEvent.model_validate(
        {**event.model_dump(mode="json", exclude_none=True), "occurred_at": draw(_year_end)}
    )


def _board_of(
    points: dict[str, dict[tuple[str, str], int]], which: str, period: str, excluded: frozenset[str]
) -> list[tuple[int, str, int]]:
    """A board as the store ranks it (`services.common.members.ranked` over points down, member id up)."""
    page = sorted(
        ((m, by.get((which, period), 0)) for m, by in points.items() if m not in excluded),
        key=lambda e: (-e[1], e[0]),
    )
    return [(rank, m, n) for m, n, rank in ranked([e for e in page if e[1] > 0], 0, 0)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_year_end_events(), max_size=50),
    st.lists(st.integers(1, 7), min_size=1, max_size=20),
    st.frozensets(_members, max_size=2),
)
def test_period_points_and_boards_match_the_model_however_the_stream_is_split(
    events: list[ActivityEvent], sizes: list[int], excluded: frozenset[str]
) -> None:
    """What each batch adds to the periods (as the scorer adds it to `member_periods`) sums to
    the model's points per board and period, whatever the split; the boards ranked from them,
    with members left out, are the model's."""
    records = [ActivityRecord(s, e) for e in events for s in e.subjects()]
    store, added = Store(), dict[str, dict[tuple[str, str], int]]()
    start, i = 0, 0
    while start < len(records):
        batch = records[start : start + sizes[i % len(sizes)]]
        states = store.load(batch)
        apply_batch(states, batch, NOW, RULES)
        for member, state in states.items():
            for key, n in period_points(state.moves, RULES).items():
                by = added.setdefault(member, {})
                by[key] = by.get(key, 0) + n
            state.moves.clear()
        store.save(states)
        start, i = start + len(batch), i + 1

    expected = Model(NOW)
    for event in events:
        expected.apply(event.model_dump(mode="json", exclude_none=True))
    for member, m in expected.members.items():
        assert {k: n for k, n in added.get(member, {}).items() if n} == model_period_points(m)
    for which in ("active", "passive", "solution_accepted"):
        for period in ("year:2025", "year:2026", "month:2025-12", "month:2026-01", "week:2026-W01"):
            assert _board_of(added, which, period, excluded) == model_board(expected, which, period, excluded)
