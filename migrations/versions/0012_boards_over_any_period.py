"""boards over any period: year points, a board index on member_periods, pinned and level indexes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 18:00:00

- `member_periods` gains each member's points per calendar year ("year:2026"), summed here
  from the months it still holds (those older than `CL_PERIODS_MONTHS_KEPT` are gone: a year
  that began before them counts only the months kept). The points of a metric's own board
  (accepted solutions) per period start with this revision; `cl rescore` rebuilds them.
- `ix_member_periods_board` answers a past period's board in the board's order (points down,
  then member id in byte order, as Redis orders ties) and replaces `ix_member_periods_period`,
  whose leading column it keeps for the pruning.
- `ix_members_pinned` finds the pinned members `exclude=pinned` leaves out; `ix_members_level`
  the members at a level (`GET /v1/levels/{id}/members`).
Indexes built concurrently, so a large table keeps taking writes meanwhile.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        INSERT INTO member_periods (member_id, tier, period, points)
        SELECT member_id, tier, 'year:' || substr(period, 7, 4), sum(points) FROM member_periods
        WHERE period COLLATE "C" >= 'month:' AND period COLLATE "C" < 'month;'
        GROUP BY member_id, tier, substr(period, 7, 4)
        ON CONFLICT (member_id, tier, period) DO NOTHING
        """
    )
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_member_periods_board"
            ' ON member_periods (period COLLATE "C", tier, points DESC, member_id COLLATE "C")'
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_member_periods_period")
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_members_pinned ON members (member_id)"
            " WHERE pinned_level IS NOT NULL"
        )
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_members_level ON members (level_id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_members_level")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_members_pinned")
        op.execute(
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_member_periods_period ON member_periods (period COLLATE "C")'
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_member_periods_board")
    op.execute("DELETE FROM member_periods WHERE period COLLATE \"C\" >= 'year:' AND period COLLATE \"C\" < 'year;'")
