"""Every scenario of the spec's vectors, run through the domain core."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events import ActivityEvent, ActivityRecord, validate_event
from shared.rules import default_rules
from shared.scoring import MemberState, apply_batch
from tests import vectors
from tests.model import Model

RULES = default_rules()


def records_of(events: list[dict[str, Any]]) -> list[ActivityRecord]:
    out: list[ActivityRecord] = []
    for raw in events:
        event = validate_event(raw)
        assert isinstance(event, ActivityEvent), event
        out.extend(ActivityRecord(subject, event) for subject in event.subjects())
    return out


def first_occurrences(records: list[ActivityRecord]) -> list[ActivityRecord]:
    """A repeated (member, event id) is ignored entirely (SPEC §4); the scorer does this against its store."""
    seen: dict[tuple[str, str], ActivityRecord] = {}
    for record in records:
        seen.setdefault((record.subject, record.event.event_id), record)
    return list(seen.values())


def outcome(states: dict[str, MemberState], chains: dict[str, list[list[int | None]]]) -> dict[str, Any]:
    return {
        member: {
            "active_score": state.scores(RULES)[0],
            "passive_score": state.scores(RULES)[1],
            "level": state.level,
            "points": state.points,
            "level_changes": chains[member],
        }
        for member, state in states.items()
    }


def run(events: list[dict[str, Any]], batch_sizes: list[int] | None = None) -> dict[str, Any]:
    """Apply the events as the scorer does: deduped, in publish order, in the given batches."""
    records = first_occurrences(records_of(events))
    states: dict[str, MemberState] = {}
    chains: dict[str, list[list[int | None]]] = {}
    sizes = iter(batch_sizes or [len(records) or 1])
    start = 0
    while start < len(records):
        size = next(sizes, len(records))
        for change in apply_batch(states, records[start : start + size], vectors.now(), RULES):
            chains.setdefault(change.member_id, []).append(
                [change.from_level.rank if change.from_level else None, change.to_level.rank]
            )
        start += max(size, 1)
    return outcome(states, chains)


@pytest.mark.parametrize("scenario", vectors.scenarios(), ids=lambda s: s["name"])
def test_scenario_gives_the_expected_members(scenario: dict[str, Any]) -> None:
    assert run(scenario["events"]) == scenario["expected"]


@pytest.mark.parametrize("scenario", vectors.scenarios(), ids=lambda s: s["name"])
def test_scenario_grants_what_the_model_says(scenario: dict[str, Any]) -> None:
    """SPEC §10.1: each member's grants and each level change's grants_added and grants_removed
    under the default rules, against the tests' own reading of the ladder (`tests/model.py`)."""
    model = Model(vectors.now())
    for event in scenario["events"]:
        model.apply(event)
    states: dict[str, MemberState] = {}
    moves: dict[str, list[list[list[str]]]] = {}
    for change in apply_batch(states, first_occurrences(records_of(scenario["events"])), vectors.now(), RULES):
        moves.setdefault(change.member_id, []).append([list(change.grants_added), list(change.grants_removed)])
    got = {
        member: {"grants": list(RULES.grants(state.level or "")), "grant_changes": moves.get(member, [])}
        for member, state in states.items()
    }
    assert got == model.grants()


@pytest.mark.parametrize("scenario", vectors.scenarios(), ids=lambda s: s["name"])
def test_scenario_earns_the_badges_the_model_says(scenario: dict[str, Any]) -> None:
    """SPEC §10.2: the badges each member's steps earn, first earned when the model says (a
    badge is granted once: a later step that meets it again grants nothing)."""
    model = Model(vectors.now())
    for event in scenario["events"]:
        model.apply(event)
    states: dict[str, MemberState] = {}
    apply_batch(states, first_occurrences(records_of(scenario["events"])), vectors.now(), RULES)
    got: dict[str, dict[str, Any]] = {}
    for member, state in states.items():
        for earned in state.earned:
            got.setdefault(member, {}).setdefault(earned.badge_id, earned.at)
    assert got == model.badges()


def test_the_vectors_earn_badges() -> None:
    """The scenarios earn badges, so the comparison above is not of nothing (metric badges only:
    no scenario reaches a level that has a badge; the unit and property tests of
    tests/unit/test_badges.py cover those)."""
    badges: set[str] = set()
    for scenario in vectors.scenarios():
        model = Model(vectors.now())
        for event in scenario["events"]:
            model.apply(event)
        badges |= {b for held in model.badges().values() for b in held}
    assert {"first_post", "first_reply", "first_solution", "events_5"} <= badges, badges
