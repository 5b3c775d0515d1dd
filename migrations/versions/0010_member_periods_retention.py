"""member periods by period: an index for pruning the periods past their retention

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:00:00

The scorer deletes the rows of weeks, months and years older than it keeps, a small batch at
a time (`CL_PERIODS_*_KEPT`); this index finds them without reading the whole table. Names
of one kind sort as their periods do in byte order ("C"), whatever the database's collation.
Built concurrently, so a large table keeps taking writes meanwhile.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_member_periods_period ON member_periods (period COLLATE "C")'
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_member_periods_period")
