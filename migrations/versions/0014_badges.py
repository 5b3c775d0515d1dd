"""badges: who holds which, their audit, holder counts, and the member's badges for its view

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 03:40:00

- `member_badges`: one row per member and badge ever granted (SPEC §10.2): the primary key
  makes a grant happen once. An operator's revocation keeps the row (`revoked_at`), so the
  scorer never grants that badge again by itself; an operator may grant it again.
- `badge_audit`: who granted or revoked a badge by hand, when and why.
- `badge_counts`: members holding each badge, kept by the transactions that grant and revoke.
- `members.badges`: the badges the member holds, id to when granted, for the member's view
  (read with the member's figures, so evaluating badges reads nothing more).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_badges",
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("badge_id", sa.Text(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause", postgresql.JSONB(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("member_id", "badge_id", name="pk_member_badges"),
    )
    op.create_table(
        "badge_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("badge_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),  # grant, revoke
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_badge_audit"),
    )
    op.create_index("ix_badge_audit_member_id", "badge_audit", ["member_id"])
    op.create_table(
        "badge_counts",
        sa.Column("badge_id", sa.Text(), nullable=False),
        sa.Column("holders", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("badge_id", name="pk_badge_counts"),
    )
    op.add_column(
        "members", sa.Column("badges", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))
    )


def downgrade() -> None:
    op.drop_column("members", "badges")
    op.drop_table("badge_counts")
    op.drop_table("badge_audit")
    op.drop_table("member_badges")
