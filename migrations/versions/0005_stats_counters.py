"""stats counters: members per level, level changes and applied records per hour

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 15:40:00

`GET /v1/stats` reads these few rows instead of counting members or history, so it costs the
same at any size. The scorer keeps them in the same transaction as what they count.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "level_counts",
        sa.Column("level_rank", sa.SmallInteger(), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("level_rank", name=op.f("pk_level_counts")),
    )
    op.create_table(
        "hourly_counts",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("what", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "what", name=op.f("pk_hourly_counts")),
    )
    op.execute("INSERT INTO level_counts SELECT level_rank, count(*) FROM members GROUP BY level_rank")
    op.execute(
        """
        INSERT INTO hourly_counts (hour, what, n)
        SELECT date_trunc('hour', recorded_at),
               CASE WHEN payload::jsonb->>'direction' = 'demoted' THEN 'demoted' ELSE 'promoted' END, count(*)
        FROM level_changes WHERE recorded_at > now() - interval '8 days' GROUP BY 1, 2
        UNION ALL
        SELECT date_trunc('hour', applied_at), 'applied', count(*)
        FROM activity WHERE applied_at > now() - interval '8 days' GROUP BY 1
        """
    )


def downgrade() -> None:
    op.drop_table("hourly_counts")
    op.drop_table("level_counts")
