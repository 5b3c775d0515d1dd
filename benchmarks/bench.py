"""`make bench`: the system's throughput and latency, each figure beside a baseline measured in
the same run (issue 7 item 4). Uses `make run`'s servers; every run has its own topics,
databases, consumer groups and Redis prefix, and removes them at the end. The services run as
processes, as `make run` starts them. Sizes come from BENCH_* variables (see README).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from alembic import command
from alembic.config import Config
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks import workload
from services.common.settings import Settings
from services.scorer.outbox import cloud_event
from services.webhooks.settings import WebhookSettings
from services.write.sql import members
from services.write.webhooks import Webhooks
from shared.events import ActivityRecord, validate_event
from shared.scoring import MemberState, apply
from shared.webhooks import EVERY

ROOT = Path(__file__).resolve().parents[1]
RUN = uuid.uuid4().hex[:6]
OUT = ROOT / ".local" / "bench"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


SIZES = {
    "events": env_int("BENCH_EVENTS", 200_000),  # scorer topic: events (a like makes two records)
    "members": env_int("BENCH_MEMBERS", 20_000),
    "naive_seconds": env_int("BENCH_NAIVE_SECONDS", 30),  # the naive scorer is timed, not drained
    "profile_seconds": env_int("BENCH_PROFILE_SECONDS", 20),
    "history_records": env_int("BENCH_HISTORY_RECORDS", 40_000),
    "history_members": env_int("BENCH_HISTORY_MEMBERS", 20),
    "history_days": env_int("BENCH_HISTORY_DAYS", 365),
    "scale_members": env_int("BENCH_SCALE_MEMBERS", 1_000_000),
    "scale_base": env_int("BENCH_SCALE_BASE", 10_000),
    "scale_records": env_int("BENCH_SCALE_RECORDS", 40_000),
    "scale_events": env_int("BENCH_SCALE_EVENTS", 10),  # the history of each member copied
    "ingest_events": env_int("BENCH_INGEST_EVENTS", 200_000),
    "clients": env_int("BENCH_CLIENTS", 4),
    "api_seconds": env_int("BENCH_API_SECONDS", 10),
    "probes": env_int("BENCH_PROBES", 200),
    "board_members": env_int("BENCH_BOARD_MEMBERS", 1_000_000),  # on a past and a running period's board
    "board_probes": env_int("BENCH_BOARD_PROBES", 100),  # requests timed per board read
    "webhook_events": env_int("BENCH_WEBHOOK_EVENTS", 20_000),  # level changes delivered to one endpoint
    "webhook_members": env_int("BENCH_WEBHOOK_MEMBERS", 2_000),
}
# Each day of that history: views, posts, likes received (issue 7's heavy member; it measured 60,1,5).
HISTORY_DAY = os.environ.get("BENCH_HISTORY_DAY", "200,20,200")
SECTIONS = os.environ.get("BENCH_SECTIONS", "scorer,api,ingest,freshness,history,scale,boards,webhooks").split(",")
API_KEY = "bench-key"
console = Console(width=200)
# How to get what a section needs when it is missing (`make bench` installs all of it).
INSTALL = {
    "wrk": "scripts/local/loadgen.sh install, or apt-get install -y wrk",
    "hey": "scripts/local/loadgen.sh install, or apt-get install -y hey",
    "py-spy": ".venv/bin/pip install py-spy",
}


class Unavailable(Exception):
    """A section cannot run on this machine; the message says what is missing and how to get it."""


def tool(name: str) -> str:
    """The path of a program a section runs: on PATH, or beside this Python (the venv's py-spy)."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise Unavailable(f"{name} is not installed (make bench installs it; or {INSTALL[name]})")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def topic(name: str) -> str:
    return f"bench-{RUN}-{name}"


@dataclass
class Row:
    section: str
    figure: str
    value: str
    baseline: str = ""
    baseline_value: str = ""
    ratio: str = ""
    target: str = ""


@dataclass
class Database:
    name: str
    dsn: str  # plain asyncpg DSN as the admin, to watch progress and build fixtures

    def url(self, role: str) -> str:
        base = make_url(Settings().database_url)
        return base.set(username=role, password=role, database=self.name).render_as_string(hide_password=False)


class Bench:
    def __init__(self) -> None:
        self.settings = Settings()
        self.bootstrap = self.settings.kafka_bootstrap
        self.admin_dsn = (
            make_url(self.settings.database_url)
            .set(drivername="postgresql", username="cl", password="cl", database="postgres")
            .render_as_string(hide_password=False)
        )
        self.rows: list[Row] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.databases: list[str] = []
        self.topics: list[str] = []
        self.cpu: dict[str, float] = {}
        self.notes: dict[str, Any] = {"run": RUN, "sizes": SIZES, "history_day": HISTORY_DAY}
        self.logs = OUT / RUN
        self.logs.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        console.log(text)

    # ---- fixtures: databases, topics, processes ------------------------------------------

    async def database(self, name: str) -> Database:
        db = f"bench_{RUN}_{name}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{db}" OWNER cl_owner')
        finally:
            await conn.close()
        self.databases.append(db)
        database = Database(db, self.admin_dsn.rsplit("/", 1)[0] + f"/{db}")
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes["url"] = database.url("cl_owner")
        await asyncio.to_thread(command.upgrade, config, "head")
        return database

    async def create_topics(self, *names: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            new = [n for n in names if n not in self.topics]
            await admin.create_topics([NewTopic(n, self.settings.topic_partitions, 1) for n in new])
            self.topics += new
            await asyncio.sleep(2)  # leaders elected: a first send would meet NotLeaderForPartition
        finally:
            await admin.close()

    def service_env(self, db: Database | None, activity: str, name: str, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "CL_TOPIC_ACTIVITY": activity,
            "CL_TOPIC_LEVEL_CHANGES": topic("level-changes"),
            "CL_TOPIC_DLQ": topic("dlq"),
            "CL_REDIS_PREFIX": f"bench:{RUN}:{name}:",
            "CL_GROUP_ID": f"bench-{RUN}-{name}",
            **extra,
        }
        if db is not None:
            env["CL_DATABASE_URL"] = db.url("cl_scorer")
        return env

    def spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{log}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def scorer(self, db: Database, activity: str, name: str, **extra: str) -> subprocess.Popen[bytes]:
        env = self.service_env(db, activity, name, CL_SCORER_PORT=str(free_port()), **extra)
        return self.spawn(["-m", "services.scorer"], env, f"scorer-{name}-{len(self.procs)}")

    async def ready(self, url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args!r} exited; logs in {self.logs}")
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not ready in {timeout} s")
                await asyncio.sleep(0.2)

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- Kafka: fill, read, drain -------------------------------------------------------------

    async def produce(self, name: str, events: list[workload.Event]) -> float:
        """Send the records of `events` as ingest does (an idempotent producer, acks=all, each
        1,000-event batch sent then awaited), from BENCH_CLIENTS concurrent senders; seconds."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
        await producer.start()
        chunks = [events[i : i + 1000] for i in range(0, len(events), 1000)]

        async def sender(mine: list[list[workload.Event]]) -> None:
            for chunk in mine:
                sent = [await producer.send(name, value, key=key) for key, value in workload.records(chunk)]
                await asyncio.gather(*sent)

        try:
            n = SIZES["clients"]
            started = time.perf_counter()
            await asyncio.gather(*(sender(chunks[i::n]) for i in range(n)))
            return time.perf_counter() - started
        finally:
            await producer.stop()

    async def end_offsets(self, name: str) -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            parts = [TopicPartition(name, p) for p in range(self.settings.topic_partitions)]
            return sum((await consumer.end_offsets(parts)).values())
        finally:
            await consumer.stop()

    async def bare_read(self, name: str, total: int) -> float:
        """Records/s of a group-less aiokafka consumer reading and json-decoding the topic."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(name, p) for p in range(self.settings.topic_partitions)])
            await consumer.seek_to_beginning()
            seen = 0
            started = time.perf_counter()
            while seen < total:
                for msgs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                    for msg in msgs:
                        json.loads(msg.value)  # type: ignore[arg-type]
                    seen += len(msgs)
            return total / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    async def drain(
        self, db: Database, name: str, group: str, total: int, procs: list[subprocess.Popen[bytes]], limit: float
    ) -> tuple[int, float, int]:
        """Watch the scorers' stored offsets from their first commit until `total` records are
        applied or `limit` seconds pass: (records applied while watched, seconds, peak RSS)."""
        conn = await asyncpg.connect(db.dsn)
        query = "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1 AND topic = $2"
        try:
            first: tuple[int, float] | None = None
            servers: dict[int, str] = {}
            deadline = time.monotonic() + 300
            while True:
                done = int(await conn.fetchval(query, group, name))
                now = time.perf_counter()
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"a scorer exited; logs in {self.logs}")
                if first is None and done > 0:
                    first = (done, now)
                    servers = server_pids(self.settings)
                    cpu = cpu_seconds({p.pid for p in procs}, servers)
                    deadline = time.monotonic() + limit
                if first is None and time.monotonic() > deadline:
                    raise RuntimeError("the scorer committed nothing in 300 s")
                if first is not None and (done >= total or time.monotonic() > deadline):
                    rss = max(peak_rss(p.pid) for p in procs)
                    used = cpu_seconds({p.pid for p in procs}, servers)
                    self.cpu = {k: (used[k] - cpu[k]) / (now - first[1]) for k in used}
                    return done - first[0], now - first[1], rss
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def run_scorers(
        self, db: Database, name: str, group: str, count: int, total: int, limit: float = 3600, **extra: str
    ) -> tuple[float, int]:
        """Start `count` scorers on topic `name`, time the drain: (records/s, peak RSS bytes)."""
        procs = [self.scorer(db, name, group, **extra) for _ in range(count)]
        try:
            done, seconds, rss = await self.drain(db, name, f"bench-{RUN}-{group}", total, procs, limit)
        finally:
            self.stop(*procs)
        return done / seconds, rss

    # ---- sections ---------------------------------------------------------------------------

    async def scorer_section(self) -> None:
        members = [f"m-{i}" for i in range(SIZES["members"])]
        events = workload.events(members, SIZES["events"], days=30)
        self.scorer_topic = topic("activity")
        await self.create_topics(self.scorer_topic, topic("level-changes"), topic("dlq"))
        seconds = await self.produce(self.scorer_topic, events)
        self.producer_rate = len(events) / seconds  # the ingest section's baseline
        total = await self.end_offsets(self.scorer_topic)
        self.say(f"topic filled: {total:,} records for {len(members):,} members in {seconds:.1f} s")
        bare = await self.bare_read(self.scorer_topic, total)
        self.say(f"bare read: {bare:,.0f} records/s")

        self.scorer_db = await self.database("one")
        one, rss = await self.run_scorers(self.scorer_db, self.scorer_topic, "one", 1, total)
        self.say(f"1 scorer: {one:,.0f} records/s, peak RSS {rss / 2**20:.0f} MB")
        busy = ", ".join(f"{k} {v:.0%}" for k, v in sorted(self.cpu.items(), key=lambda kv: -kv[1]))
        self.notes["cpu_one_scorer"] = self.cpu
        self.rows.append(
            Row(
                "scorer",
                f"1 process, {total:,} records",
                f"{one:,.0f} rec/s",
                "bare aiokafka read + json",
                f"{bare:,.0f} rec/s",
                f"{one / bare:.3f}×",
            )
        )
        two, rss2 = await self.run_scorers(await self.database("two"), self.scorer_topic, "two", 2, total)
        self.say(f"2 scorers: {two:,.0f} records/s")
        self.rows.append(
            Row("scorer", "2 processes", f"{two:,.0f} rec/s", "1 process", f"{one:,.0f} rec/s", f"{two / one:.2f}×")
        )
        naive, _ = await self.run_scorers(
            await self.database("naive"),
            self.scorer_topic,
            "naive",
            1,
            total,
            limit=SIZES["naive_seconds"],
            CL_BATCH_MAX_RECORDS="1",
        )
        self.say(f"naive scorer: {naive:,.0f} records/s")
        self.rows.append(
            Row(
                "scorer",
                "1 process",
                f"{one:,.0f} rec/s",
                f"naive: 1 record/txn ({SIZES['naive_seconds']} s)",
                f"{naive:,.0f} rec/s",
                f"{one / naive:.1f}×",
                "≥ 20×",
            )
        )
        self.rows.append(Row("scorer", "peak RSS, 1 process", f"{rss / 2**20:.0f} MB", target="< 300 MB"))
        self.rows.append(Row("scorer", "CPU while 1 process drains (of one core)", busy))
        await self.profile(total)

    async def profile(self, total: int) -> None:
        """py-spy samples a scorer draining the same topic (its own database): not timed."""
        try:
            pyspy = tool("py-spy")
        except Unavailable as exc:
            self.say(f"[yellow]no profile: {exc}")
            self.rows.append(Row("scorer", f"profile not taken: {exc}", "–"))
            return
        db = await self.database("profile")
        proc = self.scorer(db, self.scorer_topic, "profile")
        raw = self.logs / "scorer-profile.txt"
        try:
            await asyncio.sleep(3)  # past start-up, into the drain
            spy = await asyncio.create_subprocess_exec(
                pyspy,
                "record",
                "--format",
                "raw",
                "--nonblocking",
                "-r",
                "100",
                "-d",
                str(SIZES["profile_seconds"]),
                "-o",
                str(raw),
                "--pid",
                str(proc.pid),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await spy.wait()
            svg = await asyncio.create_subprocess_exec(
                pyspy,
                "record",
                "--nonblocking",
                "-r",
                "100",
                "-d",
                "10",
                "-o",
                str(self.logs / "scorer-profile.svg"),
                "--pid",
                str(proc.pid),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await svg.wait()
        finally:
            self.stop(proc)
        if raw.exists():
            self.notes["profile"] = summarize_profile(raw)
            self.notes["profile_files"] = [str(raw), str(self.logs / "scorer-profile.svg")]

    async def api_section(self) -> None:
        wrk_path, hey_path = tool("wrk"), tool("hey")
        port, bare_port = free_port(), free_port()
        api = self.spawn(
            ["-m", "services.api"],
            {
                **self.service_env(None, self.scorer_topic, "one"),
                "CL_DATABASE_URL": self.scorer_db.url("cl_api"),
                "CL_API_PORT": str(port),
            },
            "api",
        )
        bare = self.spawn(["benchmarks/bare_app.py"], {**os.environ, "BENCH_PORT": str(bare_port)}, "bare-api")
        lua = str(ROOT / "benchmarks" / "members.lua")
        try:
            await self.ready(f"http://127.0.0.1:{port}/healthz", api)
            await self.ready(f"http://127.0.0.1:{bare_port}/v1/members/m-1", bare)
            secs = str(SIZES["api_seconds"])
            wrk = [wrk_path, "-t2", "-c32", f"-d{secs}s", "-s", lua, "--latency"]
            env = {**os.environ, "BENCH_MEMBERS": str(SIZES["members"])}
            real = parse_wrk(await run([*wrk, f"http://127.0.0.1:{port}"], env))
            base = parse_wrk(await run([*wrk, f"http://127.0.0.1:{bare_port}"], env))
            self.say(f"api {real['rps']:,.0f} req/s, bare {base['rps']:,.0f} req/s")
            hey = [hey_path, "-z", f"{secs}s", "-q", "100", "-c", "10"]
            fixed = parse_hey(await run([*hey, f"http://127.0.0.1:{port}/v1/members/m-1"]))
            fixed_bare = parse_hey(await run([*hey, f"http://127.0.0.1:{bare_port}/v1/members/m-1"]))
        finally:
            self.stop(api, bare)
        self.rows += [
            Row(
                "api",
                "GET /v1/members/{id}, wrk 32 conns",
                f"{real['rps']:,.0f} req/s",
                "bare FastAPI constant",
                f"{base['rps']:,.0f} req/s",
                f"{real['rps'] / base['rps']:.2f}×",
                "≥ 0.8×",
            ),
            Row(
                "api",
                "p50 / p99 at saturation",
                f"{real['p50']:.1f} / {real['p99']:.1f} ms",
                "bare",
                f"{base['p50']:.1f} / {base['p99']:.1f} ms",
            ),
            Row(
                "api",
                f"p50 / p99 at {fixed['rps']:,.0f} req/s (hey)",
                f"{fixed['p50']:.1f} / {fixed['p99']:.1f} ms",
                "bare",
                f"{fixed_bare['p50']:.1f} / {fixed_bare['p99']:.1f} ms",
                f"{fixed['p99'] / fixed_bare['p99']:.1f}× p99",
                "p99 < 10 ms",
            ),
        ]
        if real["non2xx"] or fixed["codes"].keys() - {"200"}:
            self.say(f"[red]api answered errors: {real['non2xx']} {fixed['codes']}")

    async def ingest_section(self) -> None:
        hey = tool("hey")
        name = topic("ingest")
        await self.create_topics(name)
        port = free_port()
        env = self.service_env(
            None,
            name,
            "ingest",
            CL_INGEST_PORT=str(port),
            CL_INGEST_API_KEYS=API_KEY,
            CL_INGEST_RATE_LIMIT="1000000/second",
            CL_INGEST_EVENT_RATE_LIMIT="1000000000/second",
        )
        proc = self.spawn(["-m", "services.ingest"], env, "ingest")
        members = [f"m-{i}" for i in range(SIZES["members"])]
        body = self.logs / "batch.json"
        body.write_text(json.dumps({"events": workload.events(members, 1000, tag="i", seed=11)}))
        try:
            await self.ready(f"http://127.0.0.1:{port}/readyz", proc)
            batches = SIZES["ingest_events"] // 1000
            out = await run(
                [
                    hey,
                    "-n",
                    str(batches),
                    "-c",
                    str(SIZES["clients"]),
                    "-m",
                    "POST",
                    "-T",
                    "application/json",
                    "-H",
                    f"Authorization: Bearer {API_KEY}",
                    "-D",
                    str(body),
                    f"http://127.0.0.1:{port}/v1/events",
                ]
            )
        finally:
            self.stop(proc)
        result = parse_hey(out)
        accepted = int(result["codes"].get("202", 0))
        rate = accepted * 1000 / result["total_s"]
        self.say(f"ingest {rate:,.0f} events/s ({result['codes']})")
        baseline = getattr(self, "producer_rate", None)
        if baseline is None:  # the scorer section did not run: measure the producer here
            events = workload.events(members, SIZES["ingest_events"], tag="p")
            baseline = len(events) / await self.produce(name, events)
        self.rows.append(
            Row(
                "ingest",
                f"POST /v1/events, 1,000-event batches, {SIZES['clients']} clients",
                f"{rate:,.0f} ev/s",
                "bare idempotent producer",
                f"{baseline:,.0f} ev/s",
                f"{rate / baseline:.2f}×",
                "≥ 0.5×",
            )
        )
        if result["codes"].keys() - {"202"}:
            self.rows[-1].figure += f" (answers {dict(result['codes'])})"

    async def freshness_section(self) -> None:
        name = topic("fresh")
        await self.create_topics(name)
        db = await self.database("fresh")
        ingest_port, api_port = free_port(), free_port()
        env = self.service_env(
            db,
            name,
            "fresh",
            CL_INGEST_PORT=str(ingest_port),
            CL_API_PORT=str(api_port),
            CL_INGEST_API_KEYS=API_KEY,
            CL_INGEST_RATE_LIMIT="100000/second",
            CL_INGEST_EVENT_RATE_LIMIT="100000000/second",
        )
        scorer = self.scorer(db, name, "fresh")
        ingest = self.spawn(["-m", "services.ingest"], env, "fresh-ingest")
        api = self.spawn(["-m", "services.api"], {**env, "CL_DATABASE_URL": db.url("cl_api")}, "fresh-api")
        stop = asyncio.Event()
        latencies: list[float] = []
        headers = {"Authorization": f"Bearer {API_KEY}"}
        try:
            await self.ready(f"http://127.0.0.1:{ingest_port}/readyz", ingest)
            await self.ready(f"http://127.0.0.1:{api_port}/healthz", api)
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ingest_port}", headers=headers, timeout=30) as post,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as get,
            ):
                background = asyncio.create_task(self.background(post, stop))
                await asyncio.sleep(3)  # the scorer past its first batches
                for i in range(SIZES["probes"]):
                    member = f"probe-{i}"
                    event = {
                        "event_id": f"p-{i}",
                        "type": "reply",
                        "member_id": member,
                        "occurred_at": datetime.now(UTC).isoformat(),
                        "content_id": f"r-{i}",
                    }
                    started = time.perf_counter()
                    assert (await post.post("/v1/events", json=event)).status_code == 202
                    # polling is the measurement: the API is what the member's reader sees
                    while (await get.get(f"/v1/members/{member}")).status_code != 200:  # noqa: ASYNC110
                        await asyncio.sleep(0.002)
                    latencies.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.02)
                stop.set()
                sent = await background
        finally:
            self.stop(scorer, ingest, api)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        self.say(f"freshness p50 {p50:.0f} ms p99 {p99:.0f} ms; background {sent:,.0f} events/s")
        self.rows.append(
            Row(
                "freshness",
                f"POST to visible, {len(latencies)} probes, {sent:,.0f} ev/s behind",
                f"{p50:.0f} / {p99:.0f} ms",
                target="p99 < 100 ms",
            )
        )

    async def background(self, client: httpx.AsyncClient, stop: asyncio.Event) -> float:
        """1,000 events/s in 100-event batches every 100 ms, until `stop`; the rate achieved."""
        members = [f"bg-{i}" for i in range(2000)]
        events = workload.events(members, 200_000, days=1, tag="bg")
        started, sent = time.perf_counter(), 0
        tick = started
        while not stop.is_set():
            response = await client.post("/v1/events", json={"events": events[sent : sent + 100]})
            assert response.status_code == 202, response.text
            sent += 100
            tick += 0.1
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))
        return sent / (time.perf_counter() - started)

    async def history_section(self) -> None:
        n, count = SIZES["history_members"], SIZES["history_records"]
        db = await self.database("history")
        now = datetime.now(UTC)
        heavy = MemberState("tpl")
        for subject, raw in workload.heavy_year(
            "tpl", now - timedelta(days=1), SIZES["history_days"], *map(int, HISTORY_DAY.split(","))
        ):
            event = validate_event(raw)
            assert not isinstance(event, list), event
            apply(heavy, ActivityRecord(subject, event), now, self.settings.rules)
        size = sum(len(key) + len(json.dumps(value)) for key, value in heavy.facts.items())
        self.say(f"heavy history: {len(heavy.facts):,} facts, {size / 2**20:.1f} MB")
        await self.clone(db, heavy, "old", n)
        rates = {}
        for kind in ("new", "old"):
            name = topic(f"history-{kind}")
            await self.create_topics(name)
            members = [f"{kind}-{i}" for i in range(n)]
            await self.produce(name, workload.events(members, count, days=0.5, tag=kind, end=now))
            total = await self.end_offsets(name)
            rates[kind], _ = await self.run_scorers(db, name, f"history-{kind}", 1, total)
            self.say(f"history {kind}: {rates[kind]:,.0f} records/s")
        per_new, per_old = 1e6 / rates["new"], 1e6 / rates["old"]
        self.rows.append(
            Row(
                "history",
                f"{n} members, {SIZES['history_days']} days of history"
                f" (views,posts,likes a day: {HISTORY_DAY}; {len(heavy.facts):,} facts, {size / 2**20:.1f} MB)",
                f"{per_old:,.0f} µs/rec",
                f"{n} new members",
                f"{per_new:,.0f} µs/rec",
                f"{per_old / per_new:.2f}×",
                "≤ 1.2×",
            )
        )

    async def scale_section(self) -> None:
        base, big, count = SIZES["scale_base"], SIZES["scale_members"], SIZES["scale_records"]
        typical = self.typical_member()
        name = topic("scale")
        await self.create_topics(name)
        members = [f"s-{i}" for i in range(base)]  # the same members, present in both databases
        await self.produce(name, workload.events(members, count, days=1, tag="s"))
        total = await self.end_offsets(name)
        per, rss = {}, {}
        for size in (base, big):
            db = await self.database(f"scale{size}")
            started = time.perf_counter()
            await self.clone(db, typical, "s", size)
            self.say(f"{size:,} members inserted in {time.perf_counter() - started:.0f} s")
            rate, rss[size] = await self.run_scorers(db, name, f"scale-{size}", 1, total)
            per[size] = 1e6 / rate
            self.say(f"scale {size:,}: {rate:,.0f} records/s")
        self.rows += [
            Row(
                "scale",
                f"{big:,} members in PostgreSQL",
                f"{per[big]:,.0f} µs/rec",
                f"{base:,} members",
                f"{per[base]:,.0f} µs/rec",
                f"{per[big] / per[base]:.2f}×",
                "≤ 1.2×",
            ),
            Row(
                "scale",
                f"peak RSS with {big:,} members",
                f"{rss[big] / 2**20:.0f} MB",
                f"{base:,} members",
                f"{rss[base] / 2**20:.0f} MB",
                target="< 300 MB",
            ),
        ]

    def typical_member(self) -> MemberState:
        """A member with a typical history (BENCH_SCALE_EVENTS events over 30 days), to copy."""
        now = datetime.now(UTC)
        typical = MemberState("tpl")
        for raw in workload.events(["tpl"], SIZES["scale_events"], days=30, tag="t"):
            event = validate_event(raw)
            assert not isinstance(event, list), event
            apply(typical, ActivityRecord("tpl", event), now, self.settings.rules)
        return typical

    async def boards_section(self) -> None:
        """A past period's board, read from PostgreSQL (`member_periods`), at BENCH_BOARD_MEMBERS
        members, beside the running period's board of as many members in Redis, through the API."""
        size, probes = SIZES["board_members"], SIZES["board_probes"]
        now = datetime.now(UTC)
        past, running = f"year:{now.year - 1}", f"year:{now.year}"
        db = await self.database("boards")
        started = time.perf_counter()
        await self.clone(db, self.typical_member(), "b", size)
        conn = await asyncpg.connect(db.dsn)
        try:
            # Points spread as activity is (most members few, some many; many ties), and a month of
            # the same members beside the year, so the index holds more than the board asked for.
            for period in (past, f"month:{now.year - 1}-12"):
                await conn.execute(
                    """
                    INSERT INTO member_periods (member_id, tier, period, points)
                    SELECT 'b-' || g, 'active', $1, 1 + floor(power(random(), 3) * 5000)::bigint
                    FROM generate_series(0, $2 - 1) AS g
                    """,
                    period,
                    size,
                )
            await conn.execute("UPDATE members SET pinned_level = level_id WHERE member_id IN ('b-1', 'b-2', 'b-3')")
            await conn.execute("VACUUM ANALYZE member_periods, members")
            points = await conn.fetch("SELECT member_id, points FROM member_periods WHERE period = $1", past)
        finally:
            await conn.close()
        prefix = f"bench:{RUN}:boards:"
        redis = Redis.from_url(self.settings.redis_url)
        try:
            key = f"{prefix}board:active:{running}"
            for i in range(0, len(points), 10_000):
                await redis.zadd(key, {row["member_id"]: -row["points"] for row in points[i : i + 10_000]})
            await redis.set(f"{prefix}built:2", now.isoformat())
        finally:
            await redis.aclose()
        self.say(f"{size:,} members on a past and a running board in {time.perf_counter() - started:.0f} s")
        port = free_port()
        env = {**self.service_env(None, topic("boards"), "boards"), "CL_DATABASE_URL": db.url("cl_api")}
        api = self.spawn(["-m", "services.api"], {**env, "CL_API_PORT": str(port)}, "api-boards")
        deep = size // 2
        asks: dict[str, dict[str, str | int]] = {
            "past top 25": {"period": past},
            "running top 25": {"period": "year"},
            f"past offset {deep:,}": {"period": past, "offset": deep},
            f"running offset {deep:,}": {"period": "year", "offset": deep},
            "past top 25, pinned left out": {"period": past, "exclude": "pinned"},
            "running top 25, pinned left out": {"period": "year", "exclude": "pinned"},
        }
        timings: dict[str, list[float]] = {name: [] for name in asks}
        try:
            await self.ready(f"http://127.0.0.1:{port}/healthz", api)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for name, params in asks.items():
                    for i in range(probes + 5):  # the first few warm the caches and the pool
                        began = time.perf_counter()
                        response = await client.get("/v1/leaderboard", params={**params, "limit": 25})
                        elapsed = (time.perf_counter() - began) * 1000
                        if response.status_code != 200 or len(response.json()["entries"]) != 25:
                            raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
                        if i >= 5:
                            timings[name].append(elapsed)
        finally:
            self.stop(api)

        def p50_99(name: str) -> str:
            return f"{percentile(timings[name], 50):.1f} / {percentile(timings[name], 99):.1f} ms"

        for what in ("top 25", f"offset {deep:,}", "top 25, pinned left out"):
            past_p50, running_p50 = percentile(timings[f"past {what}"], 50), percentile(timings[f"running {what}"], 50)
            self.rows.append(
                Row(
                    "boards",
                    f"past year's board, {what}, {size:,} members (PostgreSQL), p50 / p99",
                    p50_99(f"past {what}"),
                    "this year's board (Redis)",
                    p50_99(f"running {what}"),
                    f"{past_p50 / running_p50:.1f}× p50",
                    "p99 < 50 ms" if what != f"offset {deep:,}" else "",
                )
            )

    async def webhooks_section(self) -> None:
        """Deliveries per second of the webhook dispatcher, from a backlog of BENCH_WEBHOOK_EVENTS
        level changes of BENCH_WEBHOOK_MEMBERS members to one endpoint on a local receiver,
        beside a bare httpx client POSTing the same bodies to the same receiver, as many at once
        as the dispatcher sends to an endpoint (CL_WEBHOOK_CONCURRENCY): no signing, no
        PostgreSQL, no order per member."""
        count, members = SIZES["webhook_events"], SIZES["webhook_members"]
        concurrency = WebhookSettings.model_fields["webhook_concurrency"].default
        changes = topic("webhook-changes")
        await self.create_topics(changes, topic("activity"), topic("dlq"))  # the dispatcher makes those it names
        db = await self.database("webhooks")
        port = free_port()
        receiver = self.spawn(["benchmarks/receiver.py"], {**os.environ, "BENCH_PORT": str(port)}, "webhook-receiver")
        url = f"http://127.0.0.1:{port}/hooks"
        settings = WebhookSettings(database_url=db.url("cl_scorer"))
        engine = create_async_engine(db.url("cl_scorer"))
        try:
            await self.ready(url, receiver, timeout=30)
            await Webhooks(engine, settings.fernet()).add(url, [EVERY], [], "bench", datetime.now(UTC))
            records = [cloud_event(body, "urn:bench") for body in webhook_bodies(count, members)]
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
            await producer.start()
            try:
                sent = [
                    await producer.send(changes, r.value, key=r.key, headers=list(r.headers.items())) for r in records
                ]
                await asyncio.gather(*sent)
            finally:
                await producer.stop()
            env = self.service_env(
                db,
                topic("activity"),
                "webhooks",
                CL_TOPIC_LEVEL_CHANGES=changes,
                CL_WEBHOOK_GROUP_ID=f"bench-{RUN}-webhooks",
                CL_WEBHOOKS_PORT=str(free_port()),
                CL_WEBHOOK_ALLOW_PRIVATE="true",
            )
            dispatcher = self.spawn(["-m", "services.webhooks"], env, "webhooks")
            conn = await asyncpg.connect(db.dsn)
            try:
                deadline = time.monotonic() + 600
                while await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'") < count:
                    if dispatcher.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the dispatcher did not deliver {count:,} events; logs in {self.logs}")
                    await asyncio.sleep(0.5)
                first, last, attempts, p50, p99 = await conn.fetchrow(
                    """SELECT min(at), max(at + duration_ms * interval '1 millisecond'), count(*),
                              percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                              percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms)
                       FROM webhook_attempts"""
                )
            finally:
                await conn.close()
            self.stop(dispatcher)
            dispatched = count / (last - first).total_seconds()
            bodies = [r.value for r in records]
            bare = await bare_posts(url, bodies, concurrency)
        finally:
            await engine.dispose()
            self.stop(receiver)
        self.notes["webhooks"] = {"attempts": attempts, "attempt_p50_ms": p50, "attempt_p99_ms": p99}
        self.rows.append(
            Row(
                "webhooks",
                f"deliveries/s, {count:,} level changes of {members:,} members to one endpoint "
                f"({concurrency} members at once, each member's in order)",
                f"{dispatched:,.0f}",
                f"bare httpx client, {concurrency} POSTs at once",
                f"{bare:,.0f}",
                f"{dispatched / bare:.2f}×",
            )
        )
        self.rows.append(Row("webhooks", "one POST of the dispatcher, p50 / p99", f"{p50:.0f} / {p99:.0f} ms"))

    async def clone(self, db: Database, state: MemberState, prefix: str, count: int) -> None:
        """`count` members `<prefix>-<i>` with this state, written set-based: the template row
        by the scorer's own save_states, then copied by generate_series."""
        engine = create_async_engine(db.url("cl_owner"))
        try:
            async with engine.begin() as conn:
                await members.save_states(conn, [state], self.settings.rules, datetime.now(UTC))
                await members.save_facts(conn, [state], {})
        finally:
            await engine.dispose()
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute(
                """
                INSERT INTO members (member_id, level_id, level_seq, active_score, passive_score, points,
                                     joined_at, joined_declared, first_seen, tenure_due_at, version, updated_at)
                SELECT $1 || '-' || g, level_id, level_seq, active_score, passive_score, points, joined_at,
                       joined_declared, first_seen, tenure_due_at, 1, updated_at
                FROM members, generate_series(0, $2 - 1) AS g WHERE member_id = $3
                """,
                prefix,
                count,
                state.member_id,
            )
            await conn.execute(
                """
                INSERT INTO member_facts (member_id, fact, value)
                SELECT $1 || '-' || g, fact, value FROM generate_series(0, $2 - 1) AS g, member_facts
                WHERE member_id = $3
                """,
                prefix,
                count,
                state.member_id,
            )
            await conn.execute("DELETE FROM members WHERE member_id = $1", state.member_id)
            await conn.execute("DELETE FROM member_facts WHERE member_id = $1", state.member_id)
            await conn.execute("VACUUM ANALYZE members, member_facts")
        finally:
            await conn.close()

    # ---- the run ------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        self.stop(*self.procs)
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for db in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()
        if self.topics:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics(self.topics)
            finally:
                await admin.close()
        redis = Redis.from_url(self.settings.redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"bench:{RUN}:*", count=10_000)]
            for i in range(0, len(keys), 10_000):
                await redis.delete(*keys[i : i + 10_000])
        finally:
            await redis.aclose()

    def table(self) -> Table:
        table = Table(title=f"make bench {RUN} · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores")
        for col in ("section", "figure", "value", "baseline (same run)", "baseline value", "ratio", "target"):
            table.add_column(col)
        for row in self.rows:
            table.add_row(row.section, row.figure, row.value, row.baseline, row.baseline_value, row.ratio, row.target)
        return table


def webhook_bodies(count: int, members: int) -> list[bytes]:
    """`count` level changes as the relay publishes them, of `members` members in turn, each
    member's seq counting up (promotions and demotions alternating)."""
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    levels = [
        {"id": "new_member", "name": "New Member", "tier": "active", "rank": 1},
        {"id": "new_contributor", "name": "New Contributor", "tier": "active", "rank": 5},
    ]
    bodies = []
    for i in range(count):
        member, seq = f"wh-{RUN}-{i % members}", i // members + 1
        change = {
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{member}/{seq}")),
            "member_id": member,
            "seq": seq,
            "direction": "promoted" if seq % 2 else "demoted",
            "from_level": None if seq == 1 else levels[(seq + 1) % 2],  # promoted from 0 to 1, demoted back
            "to_level": levels[seq % 2],
            "grants_added": [],
            "grants_removed": [],
            "active_score": 5 if seq % 2 else 0,
            "passive_score": 0,
            "cause": {"kind": "activity", "event_id": f"e-{i}", "type": "reply"},
            "rules_version": "bench",
            "occurred_at": at,
            "emitted_at": at,
        }
        bodies.append(json.dumps(change).encode())
    return bodies


async def bare_posts(url: str, bodies: list[bytes], concurrency: int) -> float:
    """POSTs/s of a plain httpx client sending `bodies` to `url`, `concurrency` at once."""
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker() -> None:
            for body in queue:
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


async def run(args: list[str], env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await proc.communicate()
    return out.decode()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    if "Requests/sec:" not in out:  # wrk could not connect or was stopped: say what it printed
        raise RuntimeError(f"wrk gave no figures: {out.strip()[-300:]!r}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0}


def parse_hey(out: str) -> dict[str, Any]:
    if "Requests/sec:" not in out:
        raise RuntimeError(f"hey gave no figures: {out.strip()[-300:]!r}")

    def secs(pattern: str) -> float:
        found = re.search(pattern, out)  # hey leaves out percentiles that few requests cannot give
        return float(found.group(1)) if found else float("nan")

    return {
        "rps": secs(r"Requests/sec:\s+([\d.]+)"),
        "total_s": secs(r"Total:\s+([\d.]+) secs"),
        "p50": secs(r"50%+ in ([\d.]+) secs") * 1000,
        "p99": secs(r"99%+ in ([\d.]+) secs") * 1000,
        "codes": Counter({m[0]: int(m[1]) for m in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}),
    }


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def listener(port: int) -> int | None:
    """The pid of the process listening on this local TCP port, if this user can see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in inodes:
                return int(fd.parent.parent.name)
        except OSError:  # the process or the descriptor is gone, or not ours to read
            continue
    return None


def server_pids(settings: Settings) -> dict[int, str]:
    """The servers this run uses, by the pid listening on each one's port: other clusters on the
    machine (another checkout's, a test run's) are not counted with them."""
    ports = {
        "postgres": make_url(settings.database_url).port or 5432,
        "kafka": int(settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1]),
        "redis": make_url(settings.redis_url).port or 6379,
    }
    return {pid: name for name, port in ports.items() if (pid := listener(port)) is not None}


def cpu_seconds(scorers: set[int], servers: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far by the scorers and by each server of `servers` (pid: name), with
    the processes it started (PostgreSQL's backends and workers)."""
    out: dict[str, float] = dict.fromkeys(["scorer", *servers.values()], 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid, ppid = int(stat.parent.name), int(fields[1])
        name = "scorer" if pid in scorers else servers.get(pid) or servers.get(ppid)
        if name:
            out[name] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if pid in servers:  # cutime, cstime: its children that ended (a backend whose client left)
            out[servers[pid]] += (int(fields[13]) + int(fields[14])) / tick
    return out


def summarize_profile(raw: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """py-spy's raw (collapsed) stacks: the functions most often on top of the stack (self) and
    anywhere in it (total), as shares of the samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r" \((.*?):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return {
        "self": [(f, n / samples) for f, n in own.most_common(top)],
        "total": [(f, n / samples) for f, n in total.most_common(top * 3)],
    }


async def main() -> None:
    bench = Bench()
    sections: dict[str, Callable[[], Awaitable[None]]] = {
        "scorer": bench.scorer_section,
        "api": bench.api_section,
        "ingest": bench.ingest_section,
        "freshness": bench.freshness_section,
        "history": bench.history_section,
        "scale": bench.scale_section,
        "boards": bench.boards_section,
        "webhooks": bench.webhooks_section,
    }
    bench.say(f"run {RUN}: {', '.join(SECTIONS)}; sizes {SIZES}; logs in {bench.logs}")
    try:
        for name in SECTIONS:
            if name == "api" and not hasattr(bench, "scorer_db"):
                bench.say("[yellow]api not run: it reads the scorer section's members (BENCH_SECTIONS=scorer,api)")
                bench.rows.append(Row(name, "not run: it reads the scorer section's members", "–"))
                continue
            started = time.perf_counter()
            try:
                await sections[name]()
            except Unavailable as exc:
                bench.say(f"[yellow]{name} not run: {exc}")
                bench.rows.append(Row(name, f"not run: {exc}", "–"))
            except Exception as exc:  # one section failing still prints the others
                bench.say(f"[red]{name} failed: {exc!r}")
                bench.rows.append(Row(name, f"failed: {exc!r}"[:80], "–"))
            bench.say(f"{name} took {time.perf_counter() - started:.0f} s")
    finally:
        await bench.cleanup()
    console.print(bench.table())
    profile = bench.notes.get("profile")
    if profile:
        console.print("scorer profile (py-spy, share of samples), self:")
        for frame, share in profile["self"]:
            console.print(f"  {share:6.1%}  {frame}")
    result = {**bench.notes, "rows": [row.__dict__ for row in bench.rows]}
    (OUT / f"{RUN}.json").write_text(json.dumps(result, indent=1))
    console.print(f"figures in {OUT / f'{RUN}.json'}")


if __name__ == "__main__":
    asyncio.run(main())
