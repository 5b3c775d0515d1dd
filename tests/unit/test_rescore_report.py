"""The dry run's report keeps counts, the largest moves and a sample, whatever the members."""

from __future__ import annotations

import random

from services.cli.rescore import Moved, RescoreReport


def test_the_report_keeps_the_largest_moves_ties_in_member_id_order_and_the_first_members_changing_level() -> None:
    rng = random.Random(3)
    moved = [
        Moved(
            f"m{i:03d}",
            f"l{rank}",
            f"l{rng.choice([rank, rank + 1])}",
            (a, a + rng.randint(-4, 4)),
            (p, p + rng.randint(0, 3)),
        )
        for i in range(300)
        for rank, a, p in [(rng.randint(1, 6), rng.randint(0, 50), rng.randint(0, 50))]
    ]
    report = RescoreReport(keep=7)
    for m in moved:
        report.add(m)

    changed = [m for m in moved if m.from_level != m.to_level]
    assert report.moves == 300 and report.level_changes == len(changed)
    pairs: dict[tuple[str, str], int] = {}
    for m in changed:
        pairs[(m.from_level, m.to_level)] = pairs.get((m.from_level, m.to_level), 0) + 1
    assert report.from_to == pairs
    assert report.sample == [m.member_id for m in changed[:7]]
    assert report.largest() == sorted(moved, key=lambda m: (-m.size, m.member_id))[:7]
    assert len({m.size for m in report.largest()}) < 7, "the case should have ties"

    shuffled = RescoreReport(keep=7)
    for m in rng.sample(moved, len(moved)):
        shuffled.add(m)
    assert shuffled.largest() == report.largest()


def test_a_report_keeping_nothing_still_counts() -> None:
    report = RescoreReport(keep=0)
    report.add(Moved("a", "new_member", "new_contributor", (0, 1), (0, 0)))
    assert (report.moves, report.level_changes, report.largest(), report.sample) == (1, 1, [], [])
