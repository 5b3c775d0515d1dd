"""least privilege: the scorer reads and writes rows, the api only reads

The roles exist before this runs (scripts/local/roles.sql, run by an admin); this migration,
run as the owner role like every migration, says what each may do with the owner's tables,
now and (default privileges) in every later migration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 11:40:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITER = "cl_scorer"
READER = "cl_api"


def upgrade() -> None:
    op.execute(f"GRANT USAGE ON SCHEMA public TO {WRITER}, {READER}")
    # Rows, not the schema: no CREATE, ALTER, DROP or TRUNCATE. Sequences: identity columns.
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {WRITER}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {WRITER}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}")
    # Tables and sequences that later migrations create (as this same role) get the same.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {WRITER}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {WRITER}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER}")
    # Which migrations ran is the owner's business alone.
    op.execute(f"REVOKE ALL ON alembic_version FROM {WRITER}, {READER}")


def downgrade() -> None:
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {WRITER}, {READER}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {WRITER}")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {WRITER}, {READER}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {WRITER}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {WRITER}, {READER}")
