"""levels by id: a member's level, a pin, the members per level and the pin audit name a level
by its id, never by a rank, which means another level in another ladder

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:00:00

A rank becomes the id the ladder of the member's rules version gives it (`rules.body`); a
member scored before rules versions were kept (no version, or one not recorded) reads it in the
ladder in force, and failing that in the default ladder as it was when levels were ranked. A
pin audit line reads its rank in the ladder of its member's version the same way. The members
per level are counted again from `members`.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The default ladder, by rank, when this migration was written.
_DEFAULT = [
    "new_member",
    "community_member",
    "established_member",
    "senior_member",
    "new_contributor",
    "general_contributor",
    "reliable_contributor",
    "respected_contributor",
    "trusted_contributor",
    "community_boss",
    "certified_boss",
    "insightful_boss",
    "exceptional_boss",
    "hyper_boss",
]

_DEFAULT_ARRAY = "ARRAY[" + ", ".join(f"'{level}'" for level in _DEFAULT) + "]"  # as SQL

# The ladder (level ids by rank) of each member's rules: its own version, else the one in force.
_LADDERS = f"""
CREATE TEMPORARY TABLE member_ladder AS
SELECT m.member_id, coalesce(
    (SELECT array_agg(l->>'id' ORDER BY n)
     FROM jsonb_array_elements(r.body::jsonb->'levels') WITH ORDINALITY AS e(l, n)),
    {_DEFAULT_ARRAY}) AS ids
FROM members AS m
LEFT JOIN rules AS r ON r.version = coalesce(m.rules_version, (SELECT version FROM rules_in_force WHERE id = 1))
"""


def upgrade() -> None:
    op.execute(_LADDERS)
    op.add_column("members", sa.Column("level_id", sa.Text(), nullable=True))
    op.add_column("members", sa.Column("pinned_level", sa.Text(), nullable=True))
    op.add_column("pin_audit", sa.Column("level_id", sa.Text(), nullable=True))
    op.execute(
        "UPDATE members AS m SET level_id = l.ids[m.level_rank], pinned_level = l.ids[m.pinned_rank]"
        " FROM member_ladder AS l WHERE l.member_id = m.member_id"
    )
    op.execute(
        f"""
        UPDATE pin_audit AS a
        SET level_id = (coalesce(l.ids, {_DEFAULT_ARRAY}))[a.level_rank]
        FROM pin_audit AS b LEFT JOIN member_ladder AS l USING (member_id)
        WHERE a.id = b.id
        """
    )
    op.alter_column("members", "level_id", nullable=False)
    op.drop_column("members", "level_rank")
    op.drop_column("members", "pinned_rank")
    op.drop_column("pin_audit", "level_rank")
    _count_members_per_level("level_id", sa.Text())
    op.execute("DROP TABLE member_ladder")


def downgrade() -> None:
    op.execute(_LADDERS)
    op.add_column("members", sa.Column("level_rank", sa.SmallInteger(), nullable=True))
    op.add_column("members", sa.Column("pinned_rank", sa.SmallInteger(), nullable=True))
    op.add_column("pin_audit", sa.Column("level_rank", sa.SmallInteger(), nullable=True))
    op.execute(
        "UPDATE members AS m SET level_rank = coalesce(array_position(l.ids, m.level_id), 1),"
        " pinned_rank = array_position(l.ids, m.pinned_level)"
        " FROM member_ladder AS l WHERE l.member_id = m.member_id"
    )
    op.execute(
        f"""
        UPDATE pin_audit AS a
        SET level_rank = array_position(coalesce(l.ids, {_DEFAULT_ARRAY}),
                                        a.level_id)
        FROM pin_audit AS b LEFT JOIN member_ladder AS l USING (member_id)
        WHERE a.id = b.id
        """
    )
    op.alter_column("members", "level_rank", nullable=False)
    op.drop_column("members", "level_id")
    op.drop_column("members", "pinned_level")
    op.drop_column("pin_audit", "level_id")
    _count_members_per_level("level_rank", sa.SmallInteger())
    op.execute("DROP TABLE member_ladder")


def _count_members_per_level(column: str, kind: sa.types.TypeEngine[Any]) -> None:
    """`level_counts` anew, keyed by `column` of `members`, counted from `members`."""
    op.drop_table("level_counts")
    op.create_table(
        "level_counts",
        sa.Column(column, kind, nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(column, name=op.f("pk_level_counts")),
    )
    op.execute(f"INSERT INTO level_counts SELECT {column}, count(*) FROM members GROUP BY {column}")
