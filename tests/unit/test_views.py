"""A member's view reads the same whether made from its state (the scorer) or from its
`members` row (the API, when Redis lacks the member)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.rules import default_rules
from shared.scoring import MemberState, Pin
from shared.views import MemberView

RULES = default_rules()
JOINED = datetime(2026, 11, 1, 8, tzinfo=UTC)
NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)


def test_a_view_from_a_state_and_from_its_row_is_one_document() -> None:
    pin = Pin(level=RULES.levels[1].id, reason="spam run", until=datetime(2026, 12, 1, tzinfo=UTC))
    state = MemberState(
        "ann",
        points={"reply": 3, "view": 2},
        level=pin.level,
        joined_declared=JOINED,
        pin=pin,
        programs=("community_boss",),
        badges={"first_reply": NOW, "academy_certified": JOINED},
    )
    active, passive = state.scores(RULES)
    row = {
        "member_id": "ann",
        "level_id": pin.level,
        "active_score": active,
        "passive_score": passive,
        "points": json.dumps(state.points),  # jsonb, as asyncpg hands it over
        "joined_at": JOINED,
        "updated_at": NOW,
        "version": 7,
        "pinned_reason": "spam run",
        "pinned_until": pin.until,
        "programs": ["community_boss"],  # text[], as asyncpg hands it over
        "badges": json.dumps({"first_reply": "2026-11-29T12:30:00Z", "academy_certified": "2026-11-01T08:00:00Z"}),
    }
    stored = MemberView.of(state, RULES, 7, NOW).stored()
    assert stored == MemberView.of_row(row).stored()
    assert stored == {
        "member_id": "ann",
        "level_id": pin.level,
        "active_score": active,
        "passive_score": passive,
        "points": {"reply": 3, "view": 2},
        "joined_at": "2026-11-01T08:00:00Z",
        "pinned": {"reason": "spam run", "until": "2026-12-01T00:00:00Z"},
        "updated_at": "2026-11-29T12:30:00Z",
        "version": 7,
        "programs": ["community_boss"],
        "badges": [  # in the order granted
            {"id": "academy_certified", "granted_at": "2026-11-01T08:00:00Z"},
            {"id": "first_reply", "granted_at": "2026-11-29T12:30:00Z"},
        ],
    }


def test_a_view_of_a_member_not_pinned_says_so() -> None:
    state = MemberState("bob", points={"view": 1}, level=RULES.levels[0].id, first_seen=JOINED)
    assert MemberView.of(state, RULES, 1, NOW).stored()["pinned"] is None
