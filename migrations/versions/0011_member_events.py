"""level changes' outbox also carries a member's other events (badges, programmes)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:50:00

`level_changes` is a member's level history and the relay's outbox. A member's other events
(a badge granted, a programme joined) must reach the member-keyed topic in order with the
level changes, so they go in the same table, in the same publish order (`id`): such a row has
its CloudEvents type in `event_type` and no `seq`, which keeps counting level changes only
(SPEC §6: 1, 2, 3, … with no gaps). The primary key moves to `id`; `(member_id, seq)` stays
unique (NULLs apart). Rewriting the key locks the table briefly: run it between deploys.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE level_changes ADD COLUMN event_type text")
    op.execute("ALTER TABLE level_changes DROP CONSTRAINT pk_level_changes")
    op.execute("ALTER TABLE level_changes DROP CONSTRAINT uq_level_changes_id")
    op.execute("ALTER TABLE level_changes ADD CONSTRAINT pk_level_changes PRIMARY KEY (id)")
    op.execute("ALTER TABLE level_changes ALTER COLUMN seq DROP NOT NULL")
    op.execute("ALTER TABLE level_changes ADD CONSTRAINT uq_level_changes_member_id UNIQUE (member_id, seq)")
    op.execute(
        "ALTER TABLE level_changes ADD CONSTRAINT ck_level_changes_kind"
        " CHECK ((event_type IS NULL) = (seq IS NOT NULL))"
    )


def downgrade() -> None:
    op.execute("DELETE FROM level_changes WHERE event_type IS NOT NULL")
    op.execute("ALTER TABLE level_changes DROP CONSTRAINT ck_level_changes_kind")
    op.execute("ALTER TABLE level_changes DROP CONSTRAINT uq_level_changes_member_id")
    op.execute("ALTER TABLE level_changes ALTER COLUMN seq SET NOT NULL")
    op.execute("ALTER TABLE level_changes DROP CONSTRAINT pk_level_changes")
    op.execute("ALTER TABLE level_changes ADD CONSTRAINT uq_level_changes_id UNIQUE (id)")
    op.execute("ALTER TABLE level_changes ADD CONSTRAINT pk_level_changes PRIMARY KEY (member_id, seq)")
    op.execute("ALTER TABLE level_changes DROP COLUMN event_type")
