"""Badges (SPEC §10.2) against the real servers: granted once in the batch transaction, with
their events among the member's level changes; awards through ingest's badge_awarded (and the
refusal of a badge that is not manual); `cl badge grant|revoke`, audited, and a revocation the
scorer does not undo; the catalogue with holder counts, the member read and the pages;
erasure; and a rescore's dry run and apply."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.common.failures import RecordRefused, refused_record
from services.common.members import MemberCache
from services.write.erasure import Ends, erase_stored
from services.write.sql import badges
from services.write.sql.badges import Grant
from services.write.unit_of_work import UnitOfWork
from shared.badges import GRANTED, REVOKED
from shared.rules import DEFAULT_RULES_PATH, default_rules
from tests.asyncapi import validator
from tests.conftest import env_with, unique
from tests.integration.test_cli import cl
from tests.integration.test_programs import articles, at, publish_views, score
from tests.model import Model
from tests.support import in_process, own_topics

RULES = default_rules()
DAY = at("2027-01-20")


def event(kind: str, member: str, content: str, when: datetime = DAY, **more: Any) -> dict[str, Any]:
    stamp = when.isoformat().replace("+00:00", "Z")
    return {
        "event_id": unique("e"),
        "type": kind,
        "member_id": member,
        "content_id": content,
        "occurred_at": stamp,
        **more,
    }


async def outbox(pg: asyncpg.Connection, member: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The member's outbox rows in order: (event type, payload); a level change has no type."""
    rows = await pg.fetch(
        "SELECT event_type, payload FROM level_changes WHERE member_id = $1 AND payload IS NOT NULL ORDER BY id", member
    )
    return [(row["event_type"], orjson.loads(row["payload"])) for row in rows]


async def held(pg: asyncpg.Connection, member: str) -> dict[str, datetime]:
    rows = await pg.fetch(
        "SELECT badge_id, granted_at FROM member_badges WHERE member_id = $1 AND revoked_at IS NULL", member
    )
    return {row["badge_id"]: row["granted_at"] for row in rows}


async def counts(pg: asyncpg.Connection) -> dict[str, int]:
    return {row["badge_id"]: row["holders"] for row in await pg.fetch("SELECT * FROM badge_counts") if row["holders"]}


async def test_badges_are_granted_once_in_the_batch_with_their_events_among_the_level_changes(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("badges")), "database_url": fresh_database}
    engine = db.engine(fresh_database, "test")
    work = UnitOfWork(engine, RULES, "test", "test")
    ann, bob, cat = unique("ann"), unique("bob"), unique("cat")
    stream = (
        [event("post", ann, "p1"), event("reply", ann, "r1", at("2027-01-21"))]
        + articles(ann, 20, at("2027-01-22"))  # 500 active: Trusted Contributor
        + [event("solution_accepted", bob, "r1", at("2027-01-23"), target_member_id=ann)]
        + [event("group_joined", cat, f"g{i}", at("2027-01-24")) for i in range(3)]
        + [event("badge_awarded", cat, "academy_certified", at("2027-01-25"))]
    )
    model = Model(at("2027-02-01"))
    for raw in stream:
        model.apply(raw)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    redis = Redis.from_url(ApiSettings(**kwargs).redis_url)
    try:
        for part in (stream[:1], stream[1:5], stream[5:]):  # three batches
            await score(work, part, at("2027-02-01"))
        await score(work, stream, at("2027-02-01"))  # redelivered: no record applies twice, no badge twice

        expected = model.badges()
        assert {m: await held(pg, m) for m in (ann, bob, cat)} == {m: expected.get(m, {}) for m in (ann, bob, cat)}
        assert set(expected[ann]) == {"first_post", "first_reply", "first_article", "first_solution", "trusted"}
        assert set(expected[cat]) == {"groups_3", "academy_certified"}
        assert await counts(pg) == dict(Counter(b for m in expected.values() for b in m))
        stored = await pg.fetchval("SELECT badges FROM members WHERE member_id = $1", ann)
        assert set(json.loads(stored)) == set(expected[ann])

        # ann's events: each badge once, where it happened among the level changes.
        events = await outbox(pg, ann)
        order = [p["badge"]["id"] if t else f"seq {p['seq']}" for t, p in events]
        assert order[:3] == ["first_post", "seq 1", "first_reply"]
        assert order.index("trusted") == order.index(f"seq {max(p.get('seq') or 0 for _, p in events)}") + 1
        assert Counter(t for t, _ in events if t) == {GRANTED: len(expected[ann])}
        for kind, payload in events:
            if kind:
                validator("BadgeEvent").validate(payload)
                assert payload["granted_at"] == payload["occurred_at"]
        (award,) = [p for t, p in await outbox(pg, cat) if t and p["badge"]["id"] == "academy_certified"]
        assert award["cause"] == {"kind": "ingest", "event_id": stream[-1]["event_id"]}
        assert award["badge"] == {"id": "academy_certified", "name": "Academy Certified"}
        # The level history reads level changes only.
        seqs = await pg.fetch("SELECT seq FROM level_changes WHERE member_id = $1 AND seq IS NOT NULL ORDER BY id", ann)
        assert [r["seq"] for r in seqs] == list(range(1, len(seqs) + 1))

        # A row kept for a member and badge, granted again, grants nothing (a rescore racing a batch).
        again = Grant(ann, "first_post", DAY, {"kind": "rescore"})
        async with engine.begin() as conn:
            assert await badges.grant(conn, [again]) == set()

        # An award of a badge that is not manual, or not in the rules, is the record's fault.
        for bad in ("first_post", "wizard"):
            with pytest.raises(RecordRefused) as refused:
                await score(work, [event("badge_awarded", cat, bad)], at("2027-02-01"))
            assert refused_record(refused.value) and bad in str(refused.value)
        assert set(await held(pg, cat)) == {"groups_3", "academy_certified"}

        # The catalogue, the member read (from Redis and from PostgreSQL) and the pages.
        done = await work.grant_badge(bob, "academy_certified", "mod", "passed the exam", at("2027-02-01"))
        assert done is not None
        await publish_views(engine, redis, kwargs["redis_prefix"], done)
        async with in_process(create_app(ApiSettings(**kwargs))) as client:
            catalogue = (await client.get("/v1/badges")).json()
            assert catalogue["rules_version"] == RULES.version
            by_id = {b["id"]: b for b in catalogue["badges"]}
            assert [b["id"] for b in catalogue["badges"]] == [b.id for b in RULES.badges]
            assert by_id["academy_certified"]["holders"] == 2 and by_id["academy_certified"]["manual"] is True
            assert by_id["academy_certified"]["link"] == RULES.badge("academy_certified").link  # type: ignore[union-attr]
            assert by_id["trusted"]["level"]["id"] == "trusted_contributor" and by_id["trusted"]["holders"] == 1
            assert (by_id["solutions_10"]["metric"], by_id["solutions_10"]["count"]) == ("solution_accepted", 10)
            assert (
                by_id["solutions_10"]["how"] == "10 replies accepted as the solution."
                and by_id["solutions_10"]["holders"] == 0
            )

            read = (await client.get(f"/v1/members/{bob}")).json()
            assert read["badges"] == [
                {"id": "academy_certified", "name": "Academy Certified", "granted_at": "2027-02-01T10:00:00Z"}
            ]
            await MemberCache(redis, kwargs["redis_prefix"]).forget_views()
            from_pg = (await client.get(f"/v1/members/{ann}")).json()["badges"]
            assert [b["id"] for b in from_pg] == [
                b for b, _ in sorted(expected[ann].items(), key=lambda item: (item[1], item[0]))
            ]
            page = (await client.get(f"/members/{bob}")).text
            assert "Academy Certified" in page and 'href="/badges#academy_certified"' in page
            listing = (await client.get("/badges")).text
            assert "Academy Certified" in listing and RULES.badge("academy_certified").link in listing  # type: ignore[operator, union-attr]
            assert "10 replies accepted as the solution." in listing

        # Erasure deletes the member's badges and takes them off the counts.
        before = await counts(pg)
        await erase_stored(engine, ann, datetime.now(UTC), Ends("", []))
        assert await pg.fetchval("SELECT count(*) FROM member_badges WHERE member_id = $1", ann) == 0
        after = await counts(pg)
        assert {b: before[b] - after.get(b, 0) for b in before} == {b: int(b in expected[ann]) for b in before}
    finally:
        await redis.aclose()
        await pg.close()
        await engine.dispose()


async def test_cl_badge_grants_and_revokes_audited_and_a_revoked_badge_stays_revoked(
    run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("cl-badges")), "database_url": fresh_database}
    engine = db.engine(fresh_database, "test")
    work = UnitOfWork(engine, RULES, "test", "test")
    ann = unique("ann")
    env = env_with(run_env, CL_DATABASE_URL=fresh_database, CL_REDIS_PREFIX=kwargs["redis_prefix"])
    env.pop("CL_OPERATOR", None)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    redis = Redis.from_url(ApiSettings(**kwargs).redis_url)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    try:
        await score(work, [event("post", ann, "p1", yesterday)], yesterday)
        assert set(await held(pg, ann)) == {"first_post"}

        code, out = await cl(env, "badge", "grant", ann, "academy_certified", "--reason", "passed")
        assert code == 2 and "--operator" in out
        code, out = await cl(env, "badge", "grant", ann, "academy_certified", "--operator", "mod")
        assert code == 2 and "--reason" in out
        code, out = await cl(env, "badge", "grant", ann, "wizard", "--operator", "mod", "--reason", "x")
        assert code == 1 and "no badge 'wizard'" in out and "nothing changed" in out
        code, out = await cl(
            env, "badge", "grant", unique("nobody"), "academy_certified", "--operator", "m", "--reason", "x"
        )
        assert code == 1 and "has been seen" in out
        code, out = await cl(env, "badge", "grant", ann, "academy_certified", "--operator", "mod", "--reason", "passed")
        assert code == 0 and f"{ann} was granted academy_certified by mod" in out, out
        code, out = await cl(env, "badge", "grant", ann, "academy_certified", "--operator", "mod", "--reason", "again")
        assert code == 0 and "holds academy_certified already" in out, out
        view = (await MemberCache(redis, kwargs["redis_prefix"]).get_many([ann]))[ann]
        assert {b["id"] for b in view["badges"]} == {"first_post", "academy_certified"}  # the CLI wrote the view

        code, out = await cl(env, "badge", "revoke", ann, "first_post", "--operator", "mod-b", "--reason", "spam")
        assert code == 0 and f"{ann} no longer holds first_post" in out, out
        code, out = await cl(env, "badge", "revoke", ann, "first_post", "--operator", "mod-b", "--reason", "spam")
        assert code == 0 and "does not hold first_post" in out, out
        assert set(await held(pg, ann)) == {"academy_certified"}
        assert await counts(pg) == {"academy_certified": 1}

        # Every post removed, then a new one: the count crosses 1 again, and the revoked badge stays so.
        now = datetime.now(UTC)
        await score(work, [event("content_removed", ann, "p1", now), event("post", ann, "p2", now)], now)
        assert set(await held(pg, ann)) == {"academy_certified"}
        # An operator may grant it again.
        code, out = await cl(env, "badge", "grant", ann, "first_post", "--operator", "mod", "--reason", "appeal won")
        assert code == 0, out
        assert set(await held(pg, ann)) == {"academy_certified", "first_post"}

        audit = await pg.fetch(
            "SELECT action, badge_id, operator, reason FROM badge_audit WHERE member_id = $1 ORDER BY id", ann
        )
        assert [tuple(r) for r in audit] == [
            ("grant", "academy_certified", "mod", "passed"),
            ("revoke", "first_post", "mod-b", "spam"),
            ("grant", "first_post", "mod", "appeal won"),
        ]
        badge_events = [(t, p) for t, p in await outbox(pg, ann) if t]
        assert [(t, p["badge"]["id"]) for t, p in badge_events] == [
            (GRANTED, "first_post"),
            (GRANTED, "academy_certified"),
            (REVOKED, "first_post"),
            (GRANTED, "first_post"),
        ]
        assert badge_events[2][1]["cause"] == {"kind": "operator", "operator": "mod-b", "reason": "spam"}
        assert len({p["event_id"] for _, p in badge_events}) == 4
        for _, payload in badge_events:
            validator("BadgeEvent").validate(payload)

    finally:
        await redis.aclose()
        await pg.close()
        await engine.dispose()


async def test_a_rescore_reports_badge_changes_and_its_apply_makes_them(
    tmp_path: Path, run_env: dict[str, str], fresh_database: str
) -> None:
    """New rules that add a badge (two replies) and drop one (first_post): the dry run counts
    the members who would gain and lose each; the apply grants and revokes them, with events."""
    engine = db.engine(fresh_database, "test")
    work = UnitOfWork(engine, RULES, "test", "test")
    ann, bob = unique("ann"), unique("bob")
    try:
        stream = [event("post", ann, "p1"), event("reply", ann, "r1"), event("reply", ann, "r2")]
        stream += [event("post", bob, "p1"), event("reply", bob, "r1")]
        await score(work, stream, at("2027-02-01"))
    finally:
        await engine.dispose()
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] = "two-replies"
    rules["badges"] = [b for b in rules["badges"] if b["id"] != "first_post"] + [
        {"id": "replies_2", "name": "Conversationalist", "description": "Two replies.", "metric": "reply", "count": 2}
    ]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    env = env_with(run_env, CL_DATABASE_URL=fresh_database)

    code, out = await cl(env, "rescore", "--dry-run", "--json", str(path))
    assert code == 0, out
    assert json.loads(out.splitlines()[-1])["badges"] == {"granted": {"replies_2": 1}, "revoked": {"first_post": 2}}
    code, out = await cl(env, "rescore", "--dry-run", str(path))
    assert "Badges would be granted: replies_2 1; would be revoked (the rules lack them): first_post 2" in out, out
    code, out = await cl(env, "rescore", "--apply", str(path))
    assert code == 0 and "Badges were granted: replies_2 1; were revoked (the rules lack them): first_post 2" in out, (
        out
    )

    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        assert set(await held(pg, ann)) == {"first_reply", "replies_2"}
        assert set(await held(pg, bob)) == {"first_reply"}
        assert await counts(pg) == {"first_reply": 2, "replies_2": 1}
        events = [(t, p["badge"]["id"], p["cause"]["kind"]) for t, p in await outbox(pg, ann) if t]
        assert events[-2:] == [(REVOKED, "first_post", "rescore"), (GRANTED, "replies_2", "activity")]
        # Applied again: nothing more.
        code, out = await cl(env, "rescore", "--dry-run", "--json", str(path))
        assert json.loads(out.splitlines()[-1])["badges"] == {"granted": {}, "revoked": {}}
    finally:
        await pg.close()
