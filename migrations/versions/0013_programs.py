"""programmes: enrolments, their audit, the member's programmes, and an index for eligibility

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 18:10:00

- `program_enrolments`: who is enrolled in which programme, from which intake (SPEC §11).
- `program_audit`: who enrolled a member or took them out, when and why.
- `members.programs`: the ids of the programmes a member is in, for the member's view (the
  scorer reads it with the member's figures; only enrolment writes it).
- `ix_level_changes_to_level`: the members whose history reached a level, by the level id in
  the change's payload, so who is eligible is found without reading the whole history. Built
  concurrently, so a large table keeps taking writes meanwhile.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "program_enrolments",
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("program_id", sa.Text(), nullable=False),
        sa.Column("intake", sa.Date(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "program_id", name="pk_program_enrolments"),
    )
    op.create_index("ix_program_enrolments_program_id", "program_enrolments", ["program_id", "member_id"])
    op.create_table(
        "program_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("program_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),  # enroll, leave
        sa.Column("intake", sa.Date(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_program_audit"),
    )
    op.create_index("ix_program_audit_member_id", "program_audit", ["member_id"])
    op.add_column("members", sa.Column("programs", sa.ARRAY(sa.Text()), nullable=False, server_default="{}"))
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_level_changes_to_level"
            " ON level_changes (((payload::jsonb #>> '{to_level,id}')), member_id) WHERE seq > 0"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_level_changes_to_level")
    op.drop_column("members", "programs")
    op.drop_table("program_audit")
    op.drop_table("program_enrolments")
