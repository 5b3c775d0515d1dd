"""operating it (SPEC §9): rules versions in force, members' rules version and pins, the pin
audit log, and tombstones in the outbox

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:00:00

- `rules` keeps every rules file the system has run under, and `rules_in_force` names the one
  new members and every finished rescore use (`cl rescore --apply`).
- `members.rules_version` is the version a member's figures are scored under; NULL for
  members scored before this migration, which the scorer sets to the rules it seeds.
- `members.pinned_*` hold a level pinned by an operator (`cl member pin`), and `pin_audit`
  who pinned or released it, when and why.
- `level_changes.payload` may be NULL: an erased member's tombstone (`cl member erase`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_rules")),
    )
    op.create_table(
        "rules_in_force",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.Text(), sa.ForeignKey("rules.version"), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_in_force")),
        sa.CheckConstraint("id = 1", name=op.f("ck_rules_in_force_one_row")),
    )
    op.add_column("members", sa.Column("rules_version", sa.Text(), nullable=True))
    op.add_column("members", sa.Column("pinned_rank", sa.SmallInteger(), nullable=True))
    op.add_column("members", sa.Column("pinned_reason", sa.Text(), nullable=True))
    op.add_column("members", sa.Column("pinned_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "pin_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),  # pin, unpin, expire
        sa.Column("level_rank", sa.SmallInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pin_audit")),
    )
    op.create_index(op.f("ix_pin_audit_member_id"), "pin_audit", ["member_id"])
    op.alter_column("level_changes", "payload", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM level_changes WHERE payload IS NULL")
    op.alter_column("level_changes", "payload", nullable=False)
    op.drop_index(op.f("ix_pin_audit_member_id"), table_name="pin_audit")
    op.drop_table("pin_audit")
    for column in ("pinned_until", "pinned_reason", "pinned_rank", "rules_version"):
        op.drop_column("members", column)
    op.drop_table("rules_in_force")
    op.drop_table("rules")
