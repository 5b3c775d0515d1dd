"""Which periods' points are kept (docs/PERFORMANCE.md, "Data over the years"): the running
week, month and year and a number of each before them; names of one kind sort as their periods.
And which periods a board may name (SPEC §7)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.scoring import board_period, oldest_kept, period_end, periods


def test_the_oldest_period_kept_counts_back_from_the_running_one() -> None:
    # Tuesday 1 December 2026 falls in ISO week 2026-W49.
    assert oldest_kept(date(2026, 12, 1), weeks=53, months=25, years=5) == {
        "week": "week:2025-W48",
        "month": "month:2024-11",
        "year": "year:2021",
    }


def test_counting_back_crosses_years_and_iso_years() -> None:
    # 1 January 2026 is a Thursday of ISO week 2026-W01, which began on 29 December 2025.
    assert oldest_kept(date(2026, 1, 1), weeks=1, months=1, years=3) == {
        "week": "week:2025-W52",
        "month": "month:2025-12",
        "year": "year:2023",
    }


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(9000, 12, 31)), st.integers(1, 120))
def test_the_periods_kept_are_exactly_those_that_sort_from_the_oldest_kept(today: date, n: int) -> None:
    oldest = oldest_kept(today, weeks=n, months=n, years=n)
    month, week, year = periods(today.isoformat())
    assert week >= oldest["week"] and month >= oldest["month"] and year >= oldest["year"]
    back = today - timedelta(weeks=n)
    assert periods(back.isoformat())[1] == oldest["week"]
    assert periods((back - timedelta(weeks=1)).isoformat())[1] < oldest["week"]
    assert f"year:{today.year - n - 1:04d}" < oldest["year"] <= f"year:{today.year:04d}"


def test_a_board_names_the_running_periods_or_a_past_one_and_nothing_else() -> None:
    today = date(2026, 12, 4)
    assert [board_period(p, today) for p in ("all", "year", "month", "week")] == [
        "all",
        "year:2026",
        "month:2026-12",
        "week:2026-W49",
    ]
    assert board_period("year:2025", today) == "year:2025"
    assert board_period("week:2020-W53", today) == "week:2020-W53"  # 2020 had 53 ISO weeks
    for name, problem in (
        ("week:2021-W53", "names no week"),
        ("month:2026-00", "names no month"),
        ("year:0000", "names no year"),
        ("month:2027-01", "has not begun"),
        ("week:2026-W50", "has not begun"),
        ("month:2026-1", "is not a period"),
        ("years:2025", "is not a period"),
    ):
        with pytest.raises(ValueError, match=problem):
            board_period(name, today)
    assert period_end("year:2025") == datetime(2026, 1, 1, tzinfo=UTC)
