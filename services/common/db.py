"""PostgreSQL: the tables (the source of truth) and the engine factory.

All SQL lives in repository modules (the write side's `services.write.sql`, the API's
`services.api.repository`); this module only describes the schema, which Alembic's
migrations create.
"""

from __future__ import annotations

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per member: the figures scoring keeps (the facts are in `member_facts`), which the
# read path and leaderboards query too.
members = Table(
    "members",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("level_id", Text, nullable=False),  # levels are known by id across rules versions
    Column("level_seq", Integer, nullable=False),
    Column("active_score", BigInteger, nullable=False),  # uncapped metrics: no 4-byte ceiling
    Column("passive_score", BigInteger, nullable=False),
    Column("points", JSONB, nullable=False),
    Column("joined_at", DateTime(timezone=True), nullable=False),  # joined_declared, else first_seen
    Column("joined_declared", DateTime(timezone=True)),  # earliest member_joined
    Column("first_seen", DateTime(timezone=True)),  # earliest occurred_at of any event naming the member
    Column("tenure_due_at", DateTime(timezone=True)),
    Column("rules_version", Text),  # the rules its figures are scored under (NULL: before 0007)
    Column("pinned_level", Text),  # a level pinned by an operator (SPEC §9.3)
    Column("pinned_reason", Text),
    Column("pinned_until", DateTime(timezone=True)),
    Column("programs", ARRAY(Text), nullable=False, server_default="{}"),  # ids of the programmes it is in (§11)
    Column("badges", JSONB, nullable=False, server_default=text("'{}'::jsonb")),  # held: id -> granted_at (§10.2)
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_members_tenure_due_at", "tenure_due_at", postgresql_where=text("tenure_due_at IS NOT NULL")),
    Index("ix_members_pinned", "member_id", postgresql_where=text("pinned_level IS NOT NULL")),  # exclude=pinned
    Index("ix_members_level", "level_id"),  # who holds a level
)

# The facts later records need (`shared.scoring.MemberState`), one row per member and fact
# key, so a batch reads and writes only the facts its records name, however long the history.
member_facts = Table(
    "member_facts",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("fact", Text, primary_key=True),
    Column("value", JSONB, nullable=False),
)

# The members each commit changed, until their views are in Redis (`services.write.views`):
# one row a commit, so the hot path writes no per-member flag.
pending_views = Table(
    "pending_views",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("member_ids", ARRAY(Text), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

# Every applied activity record, once per member and event id: the dedupe key, and the
# history a rescore replays.
activity = Table(
    "activity",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("position", BigInteger, Identity(), nullable=False, unique=True),  # order of application
    Column("event", JSONB, nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Level changes: the member's history, and the outbox the relay publishes to Kafka. A member's
# other events (badges, programmes) are rows here too, so they are published in order with the
# level changes: such a row has its CloudEvents type in `event_type` and no `seq`, which counts
# level changes only (a tombstone is seq 0 with no payload).
level_changes = Table(
    "level_changes",
    metadata,
    Column("member_id", Text, nullable=False),
    Column("seq", Integer),
    Column("id", BigInteger, Identity(), primary_key=True),  # publish order
    Column("event_type", Text),  # NULL: a level change (or a tombstone)
    Column("payload", Text),  # the exact bytes published, so a resend is identical; NULL: a tombstone
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("sent_at", DateTime(timezone=True)),
    UniqueConstraint("member_id", "seq"),
    CheckConstraint("(event_type IS NULL) = (seq IS NOT NULL)", name="kind"),
    Index("ix_level_changes_unsent", "id", postgresql_where=text("sent_at IS NULL")),
    # Whose history reached a level (programme eligibility, SPEC §11).
    Index(
        "ix_level_changes_to_level",
        text("(payload::jsonb #>> '{to_level,id}')"),
        "member_id",
        postgresql_where=text("seq > 0"),
    ),
)

# Where each partition's consumer resumes, written in the same transaction as the totals.
# `epoch` fences a consumer that lost its partition: its write must carry the epoch it claimed.
consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger),
    Column("epoch", BigInteger, nullable=False),
    Column("owner", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Each member's points per tier (and per metric of `shared.scoring.BOARD_METRICS`, under the
# metric's name) in each calendar year ("year:2026"), month ("month:2026-11") and ISO week
# ("week:2026-W48") they earned some: the truth behind the windowed leaderboards.
member_periods = Table(
    "member_periods",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("tier", Text, primary_key=True),
    Column("period", Text, primary_key=True),
    Column("points", BigInteger, nullable=False),
)
# A past period's board in its order (points down, then member id in byte order, as Redis
# orders ties); by its leading column, the periods past their retention (names of one kind
# sort as their periods in byte order).
Index(
    "ix_member_periods_board",
    member_periods.c.period.collate("C"),
    member_periods.c.tier,
    member_periods.c.points.desc(),
    member_periods.c.member_id.collate("C"),
)

# Members per level, kept by the scorer with the level changes (`GET /v1/stats`).
level_counts = Table(
    "level_counts",
    metadata,
    Column("level_id", Text, primary_key=True),
    Column("members", BigInteger, nullable=False),
)

# Per hour: level changes (`promoted`, `demoted`) and records applied (`applied`), kept by the
# scorer in the transaction that makes them, so stats over a day or a week read a few rows.
hourly_counts = Table(
    "hourly_counts",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("what", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# Every rules file the system has scored under, and (one row) the version in force: what new
# members and a finished rescore use (SPEC §9.1).
rules = Table(
    "rules",
    metadata,
    Column("version", Text, primary_key=True),
    Column("body", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

rules_in_force = Table(
    "rules_in_force",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("version", Text, ForeignKey("rules.version"), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("id = 1", name="one_row"),
)

# Who pinned or released a member's level, when and why (SPEC §9.3).
pin_audit = Table(
    "pin_audit",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("member_id", Text, nullable=False, index=True),
    Column("action", Text, nullable=False),  # pin, unpin, expire
    Column("level_id", Text),
    Column("reason", Text),
    Column("until", DateTime(timezone=True)),
    Column("operator", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Who is enrolled in which programme, from which intake (SPEC §11); `members.programs` lists
# the same programmes for the member's view.
program_enrolments = Table(
    "program_enrolments",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("program_id", Text, primary_key=True),
    Column("intake", Date, nullable=False),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    Column("operator", Text, nullable=False),
    Index("ix_program_enrolments_program_id", "program_id", "member_id"),
)

# Who enrolled a member in a programme or took them out, when and why.
program_audit = Table(
    "program_audit",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("member_id", Text, nullable=False, index=True),
    Column("program_id", Text, nullable=False),
    Column("action", Text, nullable=False),  # enroll, leave
    Column("intake", Date),
    Column("reason", Text),
    Column("operator", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Every badge granted to a member (SPEC §10.2), once: an operator's revocation keeps the row
# (`revoked_at`), so the scorer does not grant it again; `members.badges` lists those held.
member_badges = Table(
    "member_badges",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("badge_id", Text, primary_key=True),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("cause", JSONB, nullable=False),  # as the granted event carries it
    Column("revoked_at", DateTime(timezone=True)),
)

# Who granted or revoked a badge by hand, when and why.
badge_audit = Table(
    "badge_audit",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("member_id", Text, nullable=False, index=True),
    Column("badge_id", Text, nullable=False),
    Column("action", Text, nullable=False),  # grant, revoke
    Column("reason", Text),
    Column("operator", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Members holding each badge, kept with the grants and revocations (`GET /v1/badges`).
badge_counts = Table(
    "badge_counts",
    metadata,
    Column("badge_id", Text, primary_key=True),
    Column("holders", BigInteger, nullable=False),
)

# One row: which relay may publish the outbox, until when (a lease, not a lock held while sending).
relay_lease = Table(
    "relay_lease",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Webhook endpoints (SPEC §12): what each takes, its encrypted secret, whether it is enabled,
# and which dispatcher holds its lease (migration 0015 says more).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("exclude_causes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("secret", LargeBinary, nullable=False),  # Fernet token (CL_WEBHOOK_SECRET_KEY)
    Column("previous_secret", LargeBinary),  # still signing until previous_until, after a rotation
    Column("previous_until", DateTime(timezone=True)),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("disabled_reason", Text),
    Column("failing_since", DateTime(timezone=True)),
    Column("lease_owner", Text),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The dispatcher's outbox: one row per endpoint and record of level-changes, the body as sent.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("endpoint_id", BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("state", Text, nullable=False, server_default="pending"),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), index=True),
    UniqueConstraint("endpoint_id", "topic", "partition", "offset"),
    Index(
        "ix_webhook_deliveries_pending", "endpoint_id", "member_id", "id", postgresql_where=text("state = 'pending'")
    ),
)

# Each POST of a delivery, kept a week.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("delivery_id", BigInteger, nullable=False),
    Column("endpoint_id", BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("status", Integer),
    Column("error", Text),
    Column("outcome", Text, nullable=False),  # delivered, retry, failed
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_endpoint_id", "endpoint_id", "at"),
)

# Who registered, disabled, enabled, removed an endpoint or rotated its secret.
webhook_audit = Table(
    "webhook_audit",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("endpoint_id", BigInteger, nullable=False),
    Column("action", Text, nullable=False),
    Column("detail", Text),
    Column("operator", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Members erased while records sent before the erasure may still be unapplied (SPEC §9.4):
# `lookup` recognises the id (`services.common.members.lookup`), `stand_in` is the digest the
# erasure put in its place, `ends` the end offset of each partition of `topic` (by partition)
# when it ran. The scorer puts the stand-in in the records below those ends, and deletes the
# row once its consumer has passed them all.
erased_members = Table(
    "erased_members",
    metadata,
    Column("lookup", Text, primary_key=True),
    Column("stand_in", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("ends", ARRAY(BigInteger), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

# Members' row versions come from one sequence (`member_versions`), so a later member of an
# erased id has higher versions than the erased one had, and Redis refuses the older views.
member_versions = Sequence("member_versions", metadata=metadata)

# One row: a counter the Redis repair advances and mirrors in Redis. Redis having seen a later
# epoch than PostgreSQL holds means PostgreSQL was restored from a backup: every view is rebuilt.
view_sync = Table(
    "view_sync",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
)


def _without_values(context: ExceptionContext) -> None:
    """PostgreSQL quotes the values of the row at fault in an error's DETAIL (`Key (member_id)=
    (…)`, `Failing row contains (…)`), and asyncpg puts it in the error's text: drop it, so no
    log line, traceback or dead-letter reason carries a member's id or an event's content. The
    condition, its message and the constraint's name stay."""
    error: BaseException | None = context.original_exception  # SQLAlchemy's adapter's, which copies it
    while error is not None:
        if getattr(error, "detail", None) is not None:
            error.detail = None  # type: ignore[attr-defined]
        error = error.__cause__  # asyncpg's own


def engine(
    database_url: str, application_name: str, pool_size: int = 5, idle_in_transaction_ms: int = 0
) -> AsyncEngine:
    server_settings = {"application_name": application_name}
    if idle_in_transaction_ms:
        server_settings["idle_in_transaction_session_timeout"] = str(idle_in_transaction_ms)
    made = create_async_engine(
        database_url,
        # jsonb comes back through orjson: members' points and facts are small integers and
        # strings. (It reads integers past 64 bits as floats: read client-sent JSON, such as
        # `activity.event`, as text and parse it with `services.common.strict_json.parse_json`.)
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        pool_pre_ping=True,
        # Errors and logs show the statement, never its values (members' ids, events' contents).
        hide_parameters=True,
        # A bounded connect, so a request or batch fails fast while PostgreSQL is away.
        connect_args={"server_settings": server_settings, "timeout": 5},
    )
    event.listen(made.sync_engine, "handle_error", _without_values)
    return made
