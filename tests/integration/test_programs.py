"""Programmes (SPEC §11) against the real servers: enrolment in an intake window and its edges,
eligibility on a date from the level history (against the model), the member's programmes in
its read, the events, `cl program`, erasure and a rescore's report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.common.members import MemberCache
from services.write.erasure import Ends, erase_stored
from services.write.unit_of_work import Committed, Incoming, UnitOfWork, UnknownMember
from services.write.views import Views
from shared.events import ActivityEvent, ActivityRecord
from shared.programs import next_intake, open_intake, window_closes
from shared.rules import DEFAULT_RULES_PATH, Rules, default_rules
from shared.scoring import Pin
from tests.asyncapi import validator
from tests.conftest import env_with, unique
from tests.integration.test_cli import cl
from tests.integration.test_erase import holding
from tests.model import LADDER, Model
from tests.support import in_process, own_topics, rules_file

RULES = default_rules()
BOSS_RANK = RULES.level("community_boss").rank
BOSS = RULES.programs[0]


def at(day: str, time: str = "10:00:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{time}+00:00")


def articles(member: str, n: int, when: datetime, tag: str = "") -> list[dict[str, Any]]:
    """`n` articles (25 active points each): 40 make a Community Boss, 20 a Trusted Contributor."""
    stamp = when.isoformat().replace("+00:00", "Z")
    return [
        {
            "event_id": unique("e"),
            "type": "article",
            "member_id": member,
            "content_id": f"a{tag}{i}",
            "occurred_at": stamp,
        }
        for i in range(n)
    ]


async def score(work: UnitOfWork, events: list[dict[str, Any]], now: datetime) -> None:
    records = []
    for raw in events:
        event = ActivityEvent.model_validate(raw)
        records += [Incoming(ActivityRecord(s, event), event.to_json().decode(), 0, 0) for s in event.subjects()]
    await work.commit([], records, now, [])


def engine_and_work(database: str) -> tuple[Any, UnitOfWork]:
    engine = db.engine(database, "test")
    return engine, UnitOfWork(engine, RULES, "test", "test")


async def outbox_events(pg: asyncpg.Connection, member: str) -> list[tuple[str, dict[str, Any]]]:
    """The member's programme events in the outbox (its badge events are there too)."""
    rows = await pg.fetch(
        "SELECT event_type, payload FROM level_changes WHERE member_id = $1"
        " AND event_type LIKE 'community.program.%' ORDER BY id",
        member,
    )
    return [(row["event_type"], orjson.loads(row["payload"])) for row in rows]


async def test_enrolment_holds_the_intake_window_and_its_edges(run_env: dict[str, str]) -> None:
    """The 1 February intake, 14 days: the day before is refused naming the intake, the first
    and the last day enrol, the day after is refused naming 1 July. Eligible on the intake date
    is what counts: a member who becomes a Boss during the window waits for the next intake."""
    database = run_env["CL_DATABASE_URL"]
    ann, bob, cat, dan, eve = (unique(n) for n in ("ann", "bob", "cat", "dan", "eve"))
    engine, work = engine_and_work(database)
    pg = await asyncpg.connect(database.replace("+asyncpg", ""))
    try:
        await score(work, articles(ann, 40, at("2027-01-20")), at("2027-01-20"))
        await score(work, articles(dan, 40, at("2027-01-25")) + articles(eve, 40, at("2027-01-25")), at("2027-01-25"))
        await score(work, articles(cat, 20, at("2027-01-25")), at("2027-01-25"))  # Trusted Contributor
        await score(work, articles(bob, 40, at("2027-02-03")), at("2027-02-03"))  # a Boss during the window

        with pytest.raises(ValueError, match="the next intake is 2027-02-01 \\(open until 2027-02-14\\)"):
            await work.enroll(ann, "community_boss", "mod", None, at("2027-01-31", "23:59:59"))
        assert await work.enroll(ann, "community_boss", "mod", "first day", at("2027-02-01", "00:00:00"))
        assert await work.enroll(dan, "community_boss", "mod", None, at("2027-02-14", "23:59:59"))  # last day
        with pytest.raises(ValueError, match="the next intake is 2027-07-01"):
            await work.enroll(eve, "community_boss", "mod", None, at("2027-02-15", "00:00:00"))  # the day after
        with pytest.raises(ValueError, match=f"{bob} was not eligible .* on the intake date 2027-02-01"):
            await work.enroll(bob, "community_boss", "mod", None, at("2027-02-05"))
        with pytest.raises(ValueError, match="not eligible"):
            await work.enroll(cat, "community_boss", "mod", None, at("2027-02-05"))
        assert await work.enroll(bob, "community_boss", "mod", None, at("2027-07-01"))  # eligible on 1 July

        # Enrolling twice changes nothing: no second row, audit line or event.
        assert await work.enroll(ann, "community_boss", "mod", None, at("2027-02-02")) is None
        assert await pg.fetchval("SELECT count(*) FROM program_audit WHERE member_id = $1", ann) == 1
        with pytest.raises(UnknownMember):
            await work.enroll(unique("nobody"), "community_boss", "mod", None, at("2027-02-02"))
        with pytest.raises(ValueError, match="no programme 'mentors'"):
            await work.enroll(ann, "mentors", "mod", None, at("2027-02-02"))

        left = await work.leave(ann, "community_boss", "mod-b", "stepped down", at("2027-03-01"))
        assert left is not None and left.states[ann].programs == ()
        assert await work.leave(ann, "community_boss", "mod-b", None, at("2027-03-02")) is None  # not enrolled

        events = await outbox_events(pg, ann)
        assert [t for t, _ in events] == ["community.program.joined", "community.program.left"]
        for _, payload in events:
            validator("ProgramEvent").validate(payload)
        joined, gone = (p for _, p in events)
        assert joined["program"] == {"id": "community_boss", "name": "Community Boss program"}
        assert (joined["intake"], joined["operator"], joined["reason"]) == ("2027-02-01", "mod", "first day")
        assert (gone["intake"], gone["operator"], gone["reason"]) == ("2027-02-01", "mod-b", "stepped down")
        assert joined["occurred_at"] == "2027-02-01T00:00:00Z" and joined["event_id"] != gone["event_id"]
        assert uuid.UUID(joined["event_id"])
        # The level history still counts level changes only.
        seqs = await pg.fetch("SELECT seq FROM level_changes WHERE member_id = $1 AND seq IS NOT NULL ORDER BY id", ann)
        assert [r["seq"] for r in seqs] == list(range(1, len(seqs) + 1))
        audit = await pg.fetch(
            "SELECT action, intake, operator FROM program_audit WHERE member_id = $1 ORDER BY id", ann
        )
        assert [tuple(r) for r in audit] == [("enroll", date(2027, 2, 1), "mod"), ("leave", date(2027, 2, 1), "mod-b")]
        programs = {
            m: await pg.fetchval("SELECT programs FROM members WHERE member_id = $1", m) for m in (ann, bob, dan)
        }
        assert programs == {ann: [], bob: ["community_boss"], dan: ["community_boss"]}
    finally:
        await pg.close()
        await engine.dispose()


async def test_who_is_eligible_on_a_date_equals_the_model_and_shows_who_is_enrolled(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("programs")), "database_url": fresh_database}
    engine, work = engine_and_work(fresh_database)
    tag = unique("p")
    days = {"2027-01-10": ["m0", "m1"], "2027-01-31": ["m2"], "2027-02-01": ["m3"], "2027-02-03": ["m4"]}
    events: list[dict[str, Any]] = []
    for day, names in days.items():
        for name in names:
            events += articles(f"{tag}-{name}", 40, at(day, "23:59:00"))
    events += articles(f"{tag}-m5", 20, at("2027-01-05"))  # Trusted only
    # Boss on 20 January, then an article removed on 25 January: back below the level.
    events += articles(f"{tag}-m6", 40, at("2027-01-20"))
    events.append(
        {
            "event_id": unique("e"),
            "type": "content_removed",
            "member_id": f"{tag}-m6",
            "content_id": "a0",
            "occurred_at": "2027-01-25T10:00:00Z",
        }
    )
    staff = f"{tag}-staff"
    events += articles(staff, 20, at("2027-01-05"))
    model = Model(at("2027-03-01"))
    for event in events:
        model.apply(event)
    redis = Redis.from_url(ApiSettings(**kwargs).redis_url)
    try:
        await score(work, events, at("2027-03-01"))
        await work.pin(staff, Pin("community_boss", "staff"), "mod", at("2027-01-06"))  # shown as a Boss
        done = await work.enroll(f"{tag}-m2", "community_boss", "mod", None, at("2027-02-02"))
        assert done is not None
        await publish_views(engine, redis, kwargs["redis_prefix"], done)

        async with in_process(create_app(ApiSettings(**kwargs))) as client:
            for day in ("2027-01-09", "2027-01-10", "2027-01-31", "2027-02-01", "2027-02-02", "2027-02-03"):
                seen, after, pages = [], None, 0
                while True:
                    query: dict[str, str | int] = {"as_of": day, "limit": 2}
                    if after:
                        query["after"] = after
                    answer = await client.get("/v1/programs/community_boss/eligible", params=query)
                    assert answer.status_code == 200, answer.text
                    body = answer.json()
                    seen += body["members"]
                    pages += 1
                    if not (after := body["next_after"]):
                        break
                expected = model.eligible(date.fromisoformat(day), BOSS_RANK)
                assert {m["member_id"] for m in seen} == expected, day
                assert [m["member_id"] for m in seen] == sorted(expected)
                assert pages == len(expected) // 2 + 1
                assert all(m["enrolled"] == (m["member_id"] == f"{tag}-m2") for m in seen)
                assert all(m["level"]["id"] == "community_boss" for m in seen)
            assert staff not in model.eligible(date(2027, 2, 1), BOSS_RANK)
            reached = await client.get("/v1/programs/community_boss/eligible", params={"as_of": "2027-02-01"})
            assert {m["member_id"]: m["reached_at"] for m in reached.json()["members"]}[f"{tag}-m2"] == (
                "2027-01-31T23:59:00Z"
            )

            programs = (await client.get("/v1/programs")).json()
            (boss,) = programs["programs"]
            today = date.fromisoformat(programs["today"])
            assert boss["id"] == "community_boss" and boss["min_level"]["id"] == "community_boss"
            assert (boss["intakes"], boss["window_days"], boss["pinned_counts"]) == (["02-01", "07-01"], 14, False)
            assert boss["enrolled"] == 1
            intake = open_intake(BOSS, today)
            assert boss["open_window"] == (
                intake and {"intake": str(intake), "closes": str(window_closes(BOSS, intake))}
            )
            assert boss["next_intake"] == str(next_intake(BOSS, today))

            # The member read shows the programmes: from Redis, and from PostgreSQL without it.
            m2 = (await client.get(f"/v1/members/{tag}-m2")).json()
            assert m2["programs"] == [{"id": "community_boss", "name": "Community Boss program"}]
            await MemberCache(redis, kwargs["redis_prefix"]).forget_views()
            m2 = (await client.get(f"/v1/members/{tag}-m2")).json()
            assert m2["programs"] == [{"id": "community_boss", "name": "Community Boss program"}]
            assert (await client.get(f"/v1/members/{tag}-m3")).json()["programs"] == []
            page = (await client.get(f"/members/{tag}-m2")).text
            assert "In Community Boss program" in page
            listing = (await client.get("/programs")).text
            assert "Community Boss program" in listing and "Community Boss and above" in listing

            last = await client.get("/v1/programs/community_boss/eligible", params={"as_of": "9999-12-31"})
            assert last.status_code == 200 and {m["member_id"] for m in last.json()["members"]} == model.eligible(
                date(2027, 3, 1), BOSS_RANK
            )
            missing = await client.get("/v1/programs/mentors/eligible")
            assert missing.status_code == 404 and "mentors" in missing.json()["message"]
            for bad in ("2027-02-30", "yesterday", "2027-2-1", "0000-01-01"):
                refused = await client.get("/v1/programs/community_boss/eligible", params={"as_of": bad})
                assert refused.status_code == 422 and "as_of" in refused.json()["message"], bad
    finally:
        await redis.aclose()
        await engine.dispose()


async def publish_views(engine: Any, redis: Redis, prefix: str, done: Committed) -> None:
    book = UnitOfWork(engine, RULES, "", "").book
    views = Views(engine, redis, MemberCache(redis, prefix), book, timedelta(0), timedelta(0))
    await views.publish(done)
    await views.drop_written()


async def test_cl_program_enrolls_in_an_open_window_is_audited_and_erasure_removes_it(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("cl-programs")), "database_url": fresh_database}
    today = datetime.now(UTC).date()
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] = "with-an-intake-today"
    rules["programs"].append(
        {
            "id": "helpers",
            "name": "Helpers",
            "min_level": "new_contributor",
            "intakes": [today.strftime("%m-%d")],
            "window_days": 1,
        }
    )
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    engine = db.engine(fresh_database, "test")
    work = UnitOfWork(engine, Rules.model_validate(rules), "test", "test")
    ann = unique("ann")
    env = env_with(
        run_env, CL_DATABASE_URL=fresh_database, CL_REDIS_PREFIX=kwargs["redis_prefix"], CL_RULES_PATH=str(path)
    )
    env.pop("CL_OPERATOR", None)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    redis = Redis.from_url(ApiSettings(**kwargs).redis_url)
    try:
        yesterday = datetime.now(UTC) - timedelta(days=1)
        await score(
            work,
            [
                {
                    "event_id": unique("e"),
                    "type": "reply",
                    "member_id": ann,
                    "content_id": "r",
                    "occurred_at": yesterday.isoformat(),
                }
            ],
            yesterday,
        )

        code, out = await cl(env, "program", "enroll", "helpers", ann)
        assert code == 2 and "--operator" in out
        code, out = await cl(env, "program", "enroll", "community_boss", ann, "--operator", "mod")
        assert code == 1 and "the next intake is" in out and "nothing changed" in out
        code, out = await cl(env, "program", "enroll", "helpers", ann, "--operator", "mod", "--reason", "welcome")
        assert code == 0 and f"{ann} enrolled in helpers by mod" in out, out
        code, out = await cl(env, "program", "enroll", "helpers", ann, "--operator", "mod")
        assert code == 0 and "already enrolled" in out, out
        view = (await MemberCache(redis, kwargs["redis_prefix"]).get_many([ann]))[ann]
        assert view["programs"] == ["helpers"]  # the CLI wrote the view itself
        assert [t for t, _ in await outbox_events(pg, ann)] == ["community.program.joined"]

        code, out = await cl(env, "program", "leave", "helpers", ann, "--operator", "mod")
        assert code == 0 and f"{ann} left helpers" in out, out
        code, out = await cl(env, "program", "leave", "helpers", ann, "--operator", "mod")
        assert code == 0 and "not enrolled" in out, out
        code, out = await cl(env, "program", "enroll", "helpers", ann, "--operator", "mod")
        assert code == 0, out
        assert await pg.fetchval("SELECT count(*) FROM program_audit WHERE member_id = $1", ann) == 3
        joined = [p for t, p in await outbox_events(pg, ann) if t == "community.program.joined"]
        assert len({p["event_id"] for p in joined}) == 2  # joined twice, two events

        await erase_stored(engine, ann, datetime.now(UTC), Ends("", []))
        assert set(await holding(pg, ann)) <= {"level_changes"}  # the tombstone, keyed by the id
        assert await pg.fetchval("SELECT count(*) FROM program_enrolments WHERE member_id = $1", ann) == 0
        assert await pg.fetchval("SELECT count(*) FROM program_audit WHERE member_id = $1", ann) == 0
    finally:
        await redis.aclose()
        await pg.close()
        await engine.dispose()


async def test_a_rescore_reports_enrolled_members_it_drops_below_the_level_and_leaves_them_enrolled(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("rs-programs")), "database_url": fresh_database}
    engine, work = engine_and_work(fresh_database)
    ann, bob = unique("ann"), unique("bob")
    try:
        await score(work, articles(ann, 40, at("2027-01-20")) + articles(bob, 80, at("2027-01-20")), at("2027-01-20"))
        for member in (ann, bob):
            assert await work.enroll(member, "community_boss", "mod", None, at("2027-02-02"))
    finally:
        await engine.dispose()
    # Community Boss at 2,000 active points: ann (1,000) falls below it, bob (2,000) stays.
    ladder = [(r, i, 2000 if i == "community_boss" else a, p, t) for r, i, a, p, t in LADDER]
    ladder = [(r, i, 2400 if i == "certified_boss" else a, p, t) for r, i, a, p, t in ladder]
    tuned = rules_file(tmp_path / "tuned.json", "higher-boss", {}, {}, ladder)
    env = env_with(run_env, CL_DATABASE_URL=fresh_database, CL_REDIS_PREFIX=kwargs["redis_prefix"])

    code, out = await cl(env, "rescore", "--dry-run", "--json", str(tuned))
    assert code == 0, out
    assert json.loads(out.splitlines()[-1])["enrolled_below"] == [{"member_id": ann, "program": "community_boss"}]
    code, out = await cl(env, "rescore", "--apply", str(tuned))
    assert code == 0 and f"1 enrolled members would be below their programme's level: {ann} (community_boss)" in out
    assert "they stay enrolled" in out
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        rows = await pg.fetch("SELECT member_id, programs, level_id FROM members ORDER BY member_id")
        assert {r["member_id"]: (r["programs"], r["level_id"]) for r in rows} == {
            ann: (["community_boss"], "trusted_contributor"),
            bob: (["community_boss"], "community_boss"),
        }
    finally:
        await pg.close()
