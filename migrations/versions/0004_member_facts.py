"""member facts as rows, pending views: per-record cost independent of history

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:30:00

The whole-state document (`members.state`) is split: the figures become columns of
`members`, and every fact later records need becomes a row of `member_facts`, keyed by member
and fact (the keys of `shared.scoring.MemberState`), so a batch reads and writes only the facts
its records name. The per-member `redis_synced` flag (written twice a batch) gives way to
`pending_views`, one row per commit naming the members whose views Redis is yet to get.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The old document's parts, as fact rows: (key prefix, JSON path, how its entries become rows).
_FACTS_FROM_STATE = """
INSERT INTO member_facts (member_id, fact, value)
SELECT member_id, 'cap|' || key, value FROM members, jsonb_each(state->'daily')
UNION ALL SELECT member_id, 'visit|' || key, value FROM members, jsonb_each(state->'visits')
UNION ALL SELECT member_id, 'view|' || d.key || '|' || c, '1'
    FROM members, jsonb_each(state->'views') AS d, jsonb_array_elements_text(d.value) AS c
UNION ALL SELECT member_id, 'group_joined|' || c, '1' FROM members, jsonb_array_elements_text(state->'groups') AS c
UNION ALL SELECT member_id, 'event_attended|' || c, '1' FROM members, jsonb_array_elements_text(state->'events') AS c
UNION ALL SELECT member_id, 'solution|' || c, '1' FROM members, jsonb_array_elements_text(state->'solutions') AS c
UNION ALL SELECT member_id, 'created|' || key, value FROM members, jsonb_each(state->'created')
UNION ALL SELECT member_id, 'like_given|' || key, value FROM members, jsonb_each(state->'likes_given')
UNION ALL SELECT member_id, 'like_received|' || key, value FROM members, jsonb_each(state->'likes_received')
"""

_STATE_FROM_FACTS = """
UPDATE members AS m SET state = jsonb_build_object(
    'member_id', m.member_id, 'points', m.points, 'level', m.level_rank, 'seq', m.level_seq,
    'joined_declared', to_jsonb(m.joined_declared), 'first_seen', to_jsonb(m.first_seen),
    'daily', coalesce((SELECT jsonb_object_agg(substr(fact, 5), value) FROM member_facts f
                       WHERE f.member_id = m.member_id AND fact LIKE 'cap|%'), '{}'),
    'visits', coalesce((SELECT jsonb_object_agg(substr(fact, 7), value) FROM member_facts f
                        WHERE f.member_id = m.member_id AND fact LIKE 'visit|%'), '{}'),
    'views', coalesce((SELECT jsonb_object_agg(day, contents) FROM (
                         SELECT split_part(fact, '|', 2) AS day,
                                jsonb_agg(substr(fact, 17)) AS contents
                         FROM member_facts f WHERE f.member_id = m.member_id AND fact LIKE 'view|%'
                         GROUP BY 1) AS v), '{}'),
    'groups', coalesce((SELECT jsonb_agg(substr(fact, 14)) FROM member_facts f
                        WHERE f.member_id = m.member_id AND fact LIKE 'group\\_joined|%'), '[]'),
    'events', coalesce((SELECT jsonb_agg(substr(fact, 16)) FROM member_facts f
                        WHERE f.member_id = m.member_id AND fact LIKE 'event\\_attended|%'), '[]'),
    'solutions', coalesce((SELECT jsonb_agg(substr(fact, 10)) FROM member_facts f
                           WHERE f.member_id = m.member_id AND fact LIKE 'solution|%'), '[]'),
    'created', coalesce((SELECT jsonb_object_agg(substr(fact, 9), value) FROM member_facts f
                         WHERE f.member_id = m.member_id AND fact LIKE 'created|%'), '{}'),
    'likes_given', coalesce((SELECT jsonb_object_agg(substr(fact, 12), value) FROM member_facts f
                             WHERE f.member_id = m.member_id AND fact LIKE 'like\\_given|%'), '{}'),
    'likes_received', coalesce((SELECT jsonb_object_agg(substr(fact, 15), value) FROM member_facts f
                                WHERE f.member_id = m.member_id AND fact LIKE 'like\\_received|%'), '{}'))
"""


def upgrade() -> None:
    op.create_table(
        "member_facts",
        sa.Column("member_id", sa.Text(), nullable=False),
        sa.Column("fact", sa.Text(), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "fact", name=op.f("pk_member_facts")),
    )
    op.add_column("members", sa.Column("joined_declared", sa.DateTime(timezone=True)))
    op.add_column("members", sa.Column("first_seen", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE members SET joined_declared = CAST(state->>'joined_declared' AS timestamptz),"
        " first_seen = CAST(state->>'first_seen' AS timestamptz)"
    )
    op.execute(_FACTS_FROM_STATE)
    op.drop_column("members", "state")
    op.create_table(
        "pending_views",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("member_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_views")),
    )
    op.drop_index("ix_members_redis_unsynced", table_name="members", postgresql_where=sa.text("NOT redis_synced"))
    op.drop_column("members", "redis_synced")


def downgrade() -> None:
    # Every member unsynced: the repair loop rewrites every view, as after a flush.
    op.add_column("members", sa.Column("redis_synced", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_index("ix_members_redis_unsynced", "members", ["member_id"], postgresql_where=sa.text("NOT redis_synced"))
    op.drop_table("pending_views")
    op.add_column("members", sa.Column("state", postgresql.JSONB(astext_type=sa.Text())))
    op.execute(_STATE_FROM_FACTS)
    op.alter_column("members", "state", nullable=False)
    op.drop_column("members", "first_seen")
    op.drop_column("members", "joined_declared")
    op.drop_table("member_facts")
