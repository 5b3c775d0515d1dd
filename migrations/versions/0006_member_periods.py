"""member periods: each member's points per tier per calendar month and ISO week

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:00:00

The truth behind the windowed leaderboards (SPEC §7): points count in the month and week of
the day they were earned, and a reversal takes them out of those. Members from before this
migration start with empty periods.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_periods",
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "tier", "period", name=op.f("pk_member_periods")),
    )


def downgrade() -> None:
    op.drop_table("member_periods")
