"""bigint scores, outbox age, relay lease, view epoch

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("members", "active_score", type_=sa.BigInteger(), existing_nullable=False)
    op.alter_column("members", "passive_score", type_=sa.BigInteger(), existing_nullable=False)
    op.add_column(
        "level_changes",
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "relay_lease",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_lease")),
    )
    op.execute("INSERT INTO relay_lease (id, owner, expires_at) VALUES (1, '', '-infinity')")
    op.create_table(
        "view_sync",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_view_sync")),
    )
    op.execute("INSERT INTO view_sync (id, epoch) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("view_sync")
    op.drop_table("relay_lease")
    op.drop_column("level_changes", "recorded_at")
    op.alter_column("members", "passive_score", type_=sa.Integer(), existing_nullable=False)
    op.alter_column("members", "active_score", type_=sa.Integer(), existing_nullable=False)
