"""The fault suite's harness: a client ledger, a supervisor for scorers, and the checker.

The checker trusts only what ingest acknowledged: the expected state of every member is
computed from the distinct acknowledged events, in the order they were acknowledged, by the
tests' own reading of the rules (`tests/model.py`). After the system drains it compares each
member's points, scores and level in PostgreSQL, in Redis and through the API, and the level
changes on Kafka (seq 1..n without gaps, one payload per seq, the expected chain of levels).
It counts badges too (SPEC §10.2): every badge the model grants is held in PostgreSQL, in Redis
and through the API, granted at the model's time, and announced by one granted event (a
redelivered record repeats its event id); none is lost, doubled, or granted without cause.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from services.common.members import MemberCache
from services.common.settings import Settings
from tests.conftest import ROOT
from tests.e2e.conftest import System
from tests.model import LADDER, Model
from tests.support import eventually, level_changes, of_type, read_topic


@dataclass
class Ledger:
    """What the client was told: events acknowledged with 202, in order, and every answer."""

    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    last_ack: float = 0.0

    async def post(
        self, client: httpx.AsyncClient, events: list[dict[str, Any]], batch: int = 200, pace: float = 0.0
    ) -> None:
        """Post in order, `pace` seconds between batches; a batch is retried, as a forum platform
        would, until it is acknowledged."""
        for start in range(0, len(events), batch):
            await asyncio.sleep(pace)
            body = events[start : start + batch]
            while True:
                try:
                    response = await client.post("/v1/events", json={"events": body})
                except httpx.HTTPError as exc:
                    self.answers[type(exc).__name__] += 1
                    await asyncio.sleep(0.5)
                    continue
                self.answers[str(response.status_code)] += 1
                if response.status_code == 202:
                    self.acknowledged += body
                    self.last_ack = time.monotonic()
                    break
                assert response.status_code in (429, 503), response.text
                assert "retry-after" in response.headers, "a 429 or 503 must say when to retry"
                await asyncio.sleep(float(response.headers["retry-after"]))


class Scorers:
    """Keeps scorer processes (or webhook dispatchers: `webhooks…`) running: one that dies
    (SIGKILL, a failpoint) is started again.

    `plans` lists failpoint specs for the next lives of a scorer: each restart takes the next.
    """

    def __init__(self, system: System) -> None:
        self.system = system
        self.restarts: Counter[str] = Counter()
        self.plans: dict[str, list[str]] = {}
        self.keep: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self, name: str, *plans: str, wait: bool = True) -> None:
        """Start a scorer and `wait` until it answers; not for one that may stop itself first (a
        failpoint can fire on records it fetched before claiming its partitions, and a stopped
        process never answers)."""
        self.plans[name] = list(plans[1:])
        self.keep.add(name)
        if wait:
            await self.system.astart(name, CL_FAILPOINTS=plans[0] if plans else "")
        else:
            self.system.spawn(name, CL_FAILPOINTS=plans[0] if plans else "")

    async def retire(self, name: str) -> None:
        self.keep.discard(name)
        self.system.kill(name, signal.SIGTERM)

    async def answering(self, name: str) -> None:
        """Wait until the scorer, however often restarted, answers /readyz: its HTTP server
        starts once it has joined its group, so it is reading its partitions."""

        async def answers() -> bool:
            proc = self.system.procs.get(name)
            # a scorer may die between the two checks (a failpoint logs, then kills): not yet an answer
            return proc is not None and proc.poll() is None and await asyncio.to_thread(self.system.answers, name)

        await eventually(answers, timeout=60, what=f"{name} answers")

    async def kill_at_random(self, name: str, times: int) -> int:
        """SIGKILL the process `times` times, each 1–3 s after its restarted self answers (so at
        work, not still starting); returns how many kills."""
        for _ in range(times):
            await self.answering(name)
            await asyncio.sleep(random.uniform(1.0, 3.0))
            self.kill(name)
        return times

    def kill(self, name: str) -> None:
        """SIGKILL; the supervisor starts it again."""
        proc = self.system.procs.get(name)
        if proc and proc.poll() is None:
            proc.kill()

    def __enter__(self) -> Scorers:
        self._task = asyncio.create_task(self._supervise())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _supervise(self) -> None:
        while True:
            for name in sorted(self.keep):
                proc = self.system.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    self.restarts[name] += 1
                    self.system.procs.pop(name)
                    plans = self.plans.get(name) or [""]
                    self.system.spawn(name, CL_FAILPOINTS=plans.pop(0))
            await asyncio.sleep(0.2)


def failpoints_fired(system: System) -> Counter[str]:
    """How often each failpoint fired, from the scorers' logs."""
    fired: Counter[str] = Counter()
    for log in Path(system.logs).glob("scorer*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "failpoint " in line and " fired" in line:
                fired[line.split("failpoint ", 1)[1].split()[0]] += 1
    return fired


def fenced_writes(system: System) -> int:
    return sum(
        log.read_text(errors="replace").count("offset write refused") for log in Path(system.logs).glob("scorer*.log")
    )


def refused_after_stall(system: System, name: str) -> bool:
    """Whether the scorer's write after its last stall (failpoint `before_commit:stop`) was
    refused, as it must be once the group has given its partitions to others."""
    log = (Path(system.logs) / f"{name}.log").read_text(errors="replace")
    stall = "failpoint before_commit fired: SIGSTOP"
    return stall in log and "offset write refused" in log.rsplit(stall, 1)[1]


async def activity_end_offsets(system: System) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=system.bootstrap, group_id=f"ends-{random.random()}")
    await consumer.start()
    try:
        topic = system.env["CL_TOPIC_ACTIVITY"]
        partitions = [TopicPartition(topic, p) for p in range(int(system.env.get("CL_TOPIC_PARTITIONS", "6")))]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def catch_up_time(system: System) -> float:
    """Seconds until the scorers have consumed every activity record published by now: how
    long the system takes to recover from a fault that just cleared."""
    started = time.monotonic()
    ends = await activity_end_offsets(system)
    pg = await asyncpg.connect(system.env["CL_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        while True:
            rows = await pg.fetch(
                "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
                system.env["CL_GROUP_ID"],
                system.env["CL_TOPIC_ACTIVITY"],
            )
            stored = {row["partition"]: row["next_offset"] or 0 for row in rows}
            if all(stored.get(p, 0) >= end for p, end in ends.items()):
                return round(time.monotonic() - started, 1)
            await asyncio.sleep(0.2)
    finally:
        await pg.close()


async def drained(system: System, pg: asyncpg.Connection) -> bool:
    """Every activity record consumed, every level change published, Redis holds every member."""
    ends = await activity_end_offsets(system)
    rows = await pg.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        system.env["CL_GROUP_ID"],
        system.env["CL_TOPIC_ACTIVITY"],
    )
    stored = {row["partition"]: row["next_offset"] or 0 for row in rows}
    if any(stored.get(p, 0) < end for p, end in ends.items()):
        return False
    unsent = await pg.fetchval("SELECT count(*) FROM level_changes WHERE sent_at IS NULL")
    unsynced = await pg.fetchval("SELECT count(*) FROM pending_views")
    return unsent == 0 and unsynced == 0


@dataclass
class Report:
    """The figures of one fault run (docs/RELIABILITY.md quotes the long run's)."""

    name: str
    events_acknowledged: int = 0
    records_expected: int = 0
    records_lost: int = 0
    records_unexpected: int = 0
    points_counted_twice: int = 0
    members: int = 0
    members_wrong_in_postgres: list[str] = field(default_factory=list)
    members_wrong_in_redis: list[str] = field(default_factory=list)
    members_wrong_in_api: list[str] = field(default_factory=list)
    level_change_problems: list[str] = field(default_factory=list)
    badges_expected: int = 0
    badges_lost: list[str] = field(default_factory=list)  # "member badge": not held, or never announced
    badges_doubled: list[str] = field(default_factory=list)  # announced by two granted events
    badges_unexpected: list[str] = field(default_factory=list)  # held or announced, not earned
    badges_wrong: list[str] = field(default_factory=list)  # another grant time, or Redis or the API differs
    dead_letters: int = 0
    faults: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    recover_s: float | None = None  # from the fault clearing to the backlog consumed
    drain_s: float = 0.0  # from the last acknowledgement to everything consistent

    @property
    def exact(self) -> bool:
        return not (
            self.records_lost
            or self.records_unexpected
            or self.points_counted_twice
            or self.members_wrong_in_postgres
            or self.members_wrong_in_redis
            or self.members_wrong_in_api
            or self.level_change_problems
            or self.badges_lost
            or self.badges_doubled
            or self.badges_unexpected
            or self.badges_wrong
        )

    def save(self) -> None:
        folder = Path(os.environ.get("CL_FAULT_REPORTS", ROOT / ".local" / "faults"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.json").write_text(json.dumps(asdict(self), indent=2))


def _figures(view: dict[str, Any]) -> tuple[int, int, int, dict[str, int]]:
    points = {m: n for m, n in view["points"].items() if n}
    rank = _rank(view["level_id"] if "level_id" in view else view["level"]["id"])
    return view["active_score"], view["passive_score"], rank, points


async def check(
    name: str, system: System, pg: asyncpg.Connection, api: httpx.AsyncClient, ledger: Ledger, now: datetime
) -> Report:
    """Drain, then compare everything the system says with what the acknowledged events imply."""
    report = Report(name, answers=dict(ledger.answers))
    await eventually(lambda: drained(system, pg), timeout=300, what="the system drained")
    report.drain_s = round(time.monotonic() - ledger.last_ack, 1)

    model = Model(now)
    for event in ledger.acknowledged:
        model.apply(event)
    expected = model.expected()
    ranks = {m: _rank(w["level"]) for m, w in expected.items()}
    want = {m: (w["active_score"], w["passive_score"], ranks[m], w["points"]) for m, w in expected.items()}
    members = sorted(expected)
    distinct = {e["event_id"]: e for e in ledger.acknowledged}
    report.events_acknowledged, report.members = len(distinct), len(members)

    applied = {
        (row["member_id"], row["event_id"])
        for row in await pg.fetch("SELECT member_id, event_id FROM activity WHERE member_id = ANY($1)", members)
    }
    records = {(s, e["event_id"]) for e in distinct.values() for s in {e["member_id"], e.get("target_member_id")} if s}
    report.records_expected = len(records)
    report.records_lost = len(records - applied)
    report.records_unexpected = len(applied - records)

    rows = await pg.fetch("SELECT * FROM members WHERE member_id = ANY($1)", members)
    in_pg = {r["member_id"]: _figures({**dict(r), "points": json.loads(r["points"])}) for r in rows}
    report.members_wrong_in_postgres = [m for m in members if in_pg.get(m) != want[m]]
    for m, got in in_pg.items():
        report.points_counted_twice += sum(max(0, n - want[m][3].get(k, 0)) for k, n in got[3].items())

    redis = Redis.from_url(system.env.get("CL_REDIS_URL", Settings().redis_url))
    try:
        views = await MemberCache(redis, system.env["CL_REDIS_PREFIX"]).get_many(members)
    finally:
        await redis.aclose()
    report.members_wrong_in_redis = [m for m in members if m not in views or _figures(views[m]) != want[m]]

    for start in range(0, len(members), 100):
        body = (await api.get("/v1/members", params={"ids": ",".join(members[start : start + 100])})).json()
        got_api = {v["member_id"]: _figures(v) for v in body["members"]}
        report.members_wrong_in_api += [m for m in members[start : start + 100] if got_api.get(m) != want[m]]

    published = await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], set(expected))
    report.level_change_problems = _level_change_problems(level_changes(published), expected)
    await _count_badges(report, members, model.badges(), published, pg, views, api)
    dlq = await read_topic(system.bootstrap, system.env["CL_TOPIC_DLQ"], set(expected))  # this stream's
    report.dead_letters = len(dlq)
    return report


def _rank(level_id: str) -> int:
    return next(rank for rank, lid, *_ in LADDER if lid == level_id)


def _level_change_problems(changes: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> list[str]:
    by_seq: dict[tuple[str, int], dict[str, Any]] = {}
    problems = []
    for change in changes:
        first = by_seq.setdefault((change["member_id"], change["seq"]), change)
        if first != change:
            problems.append(f"{change['member_id']} seq {change['seq']}: two different payloads")
    for member, want in expected.items():
        seqs = sorted(seq for m, seq in by_seq if m == member)
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{member}: seq not 1..n: {seqs}")
            continue
        chain = [by_seq[(member, s)] for s in seqs]
        got = [[c["from_level"]["rank"] if c["from_level"] else None, c["to_level"]["rank"]] for c in chain]
        if got != want["level_changes"]:
            problems.append(f"{member}: chain {got} != {want['level_changes']}")
    return problems


async def _count_badges(
    report: Report,
    members: list[str],
    earned: dict[str, dict[str, datetime]],
    published: list[Any],
    pg: asyncpg.Connection,
    views: dict[str, dict[str, Any]],
    api: httpx.AsyncClient,
) -> None:
    """Each badge the model grants against the rows of `member_badges`, the granted events on
    the member-keyed topic (distinct event ids: a redelivery repeats one), the Redis views and
    the API's member reads."""
    want = {(m, b): at for m, held in earned.items() for b, at in held.items()}
    report.badges_expected = len(want)
    rows = await pg.fetch(
        "SELECT member_id, badge_id, granted_at FROM member_badges WHERE member_id = ANY($1) AND revoked_at IS NULL",
        members,
    )
    stored = {(r["member_id"], r["badge_id"]): r["granted_at"] for r in rows}
    announced: dict[tuple[str, str], set[str]] = {}
    for event in of_type(published, "community.badge.granted"):
        announced.setdefault((event["member_id"], event["badge"]["id"]), set()).add(event["event_id"])
    name = " ".join
    report.badges_lost = sorted(name(k) for k in want if k not in stored or k not in announced)
    report.badges_doubled = sorted(name(k) for k, ids in announced.items() if len(ids) > 1)
    report.badges_unexpected = sorted(name(k) for k in (set(stored) | set(announced)) - set(want))
    report.badges_wrong = sorted(name(k) for k, at in want.items() if k in stored and stored[k] != at)
    held = {m: sorted(b for (who, b) in want if who == m) for m in members}
    report.badges_wrong += [f"{m} in redis" for m in members if sorted(_badge_ids(views.get(m))) != held[m]]
    for start in range(0, len(members), 100):
        body = (await api.get("/v1/members", params={"ids": ",".join(members[start : start + 100])})).json()
        got = {v["member_id"]: sorted(_badge_ids(v)) for v in body["members"]}
        report.badges_wrong += [f"{m} in the api" for m in members[start : start + 100] if got.get(m, []) != held[m]]


def _badge_ids(view: dict[str, Any] | None) -> list[str]:
    return [b["id"] for b in (view or {}).get("badges", [])]


def server(action: str, name: str) -> None:
    """Start or stop a local server with the project's scripts (`scripts/local/<name>.sh`)."""
    subprocess.run([str(ROOT / "scripts" / "local" / f"{name}.sh"), action], check=True, timeout=180)


def server_pid(name: str) -> int:
    path = {
        "kafka": ROOT / ".local" / "run" / "kafka.pid",
        "redis": ROOT / ".local" / "run" / "redis.pid",
        "postgres": ROOT / ".local" / "pg" / "data" / "postmaster.pid",
    }[name]
    return int(path.read_text().split()[0])


@asynccontextmanager
async def outage(name: str, how: str) -> AsyncIterator[None]:
    """The server is away while the block runs, and back however the block ends: `stopped` by
    its script (connections refused) or `paused` by SIGSTOP (connections accepted, no answer)."""
    if how == "paused":
        os.kill(server_pid(name), signal.SIGSTOP)
    else:
        await asyncio.to_thread(server, "stop", name)
    try:
        yield
    finally:
        if how == "paused":
            os.kill(server_pid(name), signal.SIGCONT)
        else:
            await asyncio.to_thread(server, "start", name)
