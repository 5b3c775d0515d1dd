"""erased members: erasure reaches records applied after it, and member views carry one
sequence's versions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:00:00

- `erased_members` keeps, for each member erased while records sent before the erasure may
  still be unapplied, the stand-in digest the erasure used and where each activity partition
  ended when it ran. The scorer puts the stand-in in place of the id in those records.
  A row goes once every partition's consumer has passed those ends.
- `members.version` is taken from the `member_versions` sequence, so a later member of an
  erased id has higher versions than the erased one had: Redis refuses the older views.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erased_members",
        sa.Column("lookup", sa.Text(), nullable=False),
        sa.Column("stand_in", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("ends", ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lookup", name=op.f("pk_erased_members")),
    )
    op.execute("CREATE SEQUENCE member_versions AS bigint")
    op.execute("SELECT setval('member_versions', coalesce((SELECT max(version) FROM members), 0) + 1, false)")


def downgrade() -> None:
    op.execute("DROP SEQUENCE member_versions")
    op.drop_table("erased_members")
