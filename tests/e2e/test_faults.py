"""Exact under faults (docs/RELIABILITY.md): each fault while a stream of events flows (the
webhook dispatcher's: every level change delivered at least once, too).

Each fault runs in two forms of one test body. `make test` runs the short form: 8,000 events,
outages of 12 s, 5 scorer kills. `make faults` runs the long form (`-m long`): 21,000 events
(over 20,000 distinct), outages of 30 s, 20 kills; `CL_FAULT_EVENTS`, `CL_FAULT_OUTAGE_S` and
`CL_FAULT_KILLS` change it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from services.common.kafka import producer as make_producer
from services.common.settings import Settings
from tests.e2e.conftest import System
from tests.e2e.faults import (
    Ledger,
    Report,
    Scorers,
    catch_up_time,
    check,
    failpoints_fired,
    fenced_writes,
    outage,
    refused_after_stall,
    server,
    server_pid,
)
from tests.e2e.test_webhooks import add_endpoint, remove_endpoint
from tests.streams import mixed_stream
from tests.support import eventually, read_topic
from tests.webhooks import Receiver


@dataclass(frozen=True)
class Form:
    """How big a fault run is."""

    name: str
    events: int  # posted, about 5% of them client retries
    outage_s: float  # how long a server is stalled, stopped or paused
    kills: int  # random SIGKILLs of the scorer

    def report(self, fault: str) -> str:
        """The figures file's name: the long run's figures are the ones docs/RELIABILITY.md quotes."""
        return fault if self.name == "long" else f"{fault}.{self.name}"


# 12 s outages: longer than ingest's 10 s publish timeout, so a stalled Kafka shows as 503.
SHORT = Form("short", events=8000, outage_s=12, kills=5)
LONG = Form(
    "long",
    events=int(os.environ.get("CL_FAULT_EVENTS", "21000")),
    outage_s=float(os.environ.get("CL_FAULT_OUTAGE_S", "30")),
    kills=int(os.environ.get("CL_FAULT_KILLS", "20")),
)
forms = pytest.mark.parametrize(
    "form", [pytest.param(SHORT, id="short"), pytest.param(LONG, id="long", marks=pytest.mark.long)]
)


@asynccontextmanager
async def supervised(system: System, service: str) -> AsyncIterator[Scorers]:
    """The session's `service` (scorer, webhooks) is handed to a supervisor; one plain process
    of it is left running after."""
    system.kill(service, signal.SIGTERM)
    with Scorers(system) as supervisor:
        yield supervisor
    for name in list(system.procs):
        if name.startswith(service):
            system.kill(name, signal.SIGTERM)
    await system.astart(service)


@pytest.fixture
async def scorers(system: System) -> AsyncIterator[Scorers]:
    async with supervised(system, "scorer") as supervisor:
        yield supervisor


@pytest.fixture
async def dispatchers(system: System) -> AsyncIterator[Scorers]:
    async with supervised(system, "webhooks") as supervisor:
        yield supervisor


def stream(form: Form, seed: int) -> list[dict[str, Any]]:
    """The mixed stream, with the academy's certificate awarded to one member in 20, twice each
    (two awards, two event ids: the badge is granted once), among the other events."""
    tag = uuid.uuid4().hex[:8]
    events = mixed_stream(tag, seed=seed, members=form.events // 20, count=form.events)
    rng = random.Random(seed)
    joined = [e for e in events if e["type"] == "member_joined"]
    for n, joining in enumerate(rng.sample(joined, len(joined) // 20) * 2):
        award = {**joining, "event_id": f"{tag}-award{n}", "type": "badge_awarded", "content_id": "academy_certified"}
        events.insert(rng.randint(len(joined), len(events)), award)
    return events


def assert_exact(report: Report) -> None:
    report.save()
    assert report.exact, {
        k: v for k, v in report.__dict__.items() if v and k.startswith(("records", "members_", "lev"))
    }


# A random kill waits until the restarted scorer answers (it joins its group once the killed
# member's 10 s session is over), then 1–3 s: about 13 s a kill, which the client posts through.
KILL_S = 13


@forms
@pytest.mark.timeout(600)
async def test_scorer_killed_repeatedly_loses_nothing_and_counts_nothing_twice(
    form: Form,
    system: System,
    scorers: Scorers,
    ingest: httpx.AsyncClient,
    api: httpx.AsyncClient,
    pg: asyncpg.Connection,
) -> None:
    events, ledger, now = stream(form, seed=1), Ledger(), datetime.now(UTC)
    # Named points first, one life each: after the PostgreSQL commit but before Redis is
    # written; in the relay after a send but before the row is marked sent. Then SIGKILLs at
    # random moments of a scorer that reads its partitions (not one still joining the group).
    before = failpoints_fired(system)  # the session's earlier runs are in the same logs
    await scorers.start("scorer", "after_commit:kill:@3", "relay_after_send:kill:@1")
    batch = 200
    pace = KILL_S * form.kills / (len(events) / batch)
    posting = asyncio.create_task(ledger.post(ingest, events, batch=batch, pace=pace))

    async def both_fired() -> bool:
        return len(failpoints_fired(system) - before) == 2

    await eventually(both_fired, timeout=60, what="both named failpoints fired")
    kills = await scorers.kill_at_random("scorer", form.kills)
    recovery = asyncio.create_task(catch_up_time(system))
    await posting
    report = await check(form.report("scorer_killed"), system, pg, api, ledger, now)
    report.recover_s = await recovery
    report.faults = {
        "sigkill_random": kills,
        "failpoints": dict(failpoints_fired(system) - before),
        "restarts": dict(scorers.restarts),
    }
    assert_exact(report)
    assert report.faults["failpoints"].get("after_commit") and report.faults["failpoints"].get("relay_after_send")


@forms
async def test_poison_records_go_to_the_dead_letter_topic_and_change_nothing(
    form: Form, system: System, ingest: httpx.AsyncClient, api: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    events, ledger, now = stream(form, seed=6), Ledger(), datetime.now(UTC)
    members = sorted({e["member_id"] for e in events})
    poison: dict[tuple[int, int], bytes] = {}
    producer = make_producer(Settings(kafka_bootstrap=system.bootstrap), "poisoner")
    await producer.start()

    async def poison_stream() -> None:
        kinds = [b"{not json", b'{"event_id": "x", "type": "teleport"}', b'{"huge": "' + b"x" * 900_000 + b'"}']
        for i in range(form.events // 100):  # about 1% of the records
            value = kinds[i % len(kinds)]
            meta = await (
                await producer.send(system.env["CL_TOPIC_ACTIVITY"], value, key=random.choice(members).encode())
            )
            poison[(meta.partition, meta.offset)] = value
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(ledger.post(ingest, events), poison_stream())
    finally:
        await producer.stop()
    report = await check(form.report("poison"), system, pg, api, ledger, now)
    dead = {
        (int(dict(m.headers)["source_partition"]), int(dict(m.headers)["source_offset"])): m
        for m in await read_topic(system.bootstrap, system.env["CL_TOPIC_DLQ"])
        if dict(m.headers)["source_topic"].decode() == system.env["CL_TOPIC_ACTIVITY"]
    }
    report.faults = {"poison_records": len(poison)}
    assert_exact(report)
    assert set(poison) <= set(dead), "every poison record is on the dead-letter topic"
    assert all(dead[at].value == value and dict(dead[at].headers)["reason"] for at, value in poison.items())


@forms
async def test_rebalances_and_a_stalled_scorer_keep_every_member_exact(
    form: Form,
    system: System,
    scorers: Scorers,
    ingest: httpx.AsyncClient,
    api: httpx.AsyncClient,
    pg: asyncpg.Connection,
) -> None:
    events, ledger, now = stream(form, seed=2), Ledger(), datetime.now(UTC)
    await scorers.start("scorer")
    await scorers.start("scorer-2")
    # scorer-3 stalls itself (SIGSTOP) with a batch in hand, past its Kafka session timeout;
    # it may stall before it answers, so it is not waited for.
    await scorers.start("scorer-3", "before_commit:stop:@2", wait=False)
    posting = asyncio.create_task(ledger.post(ingest, events, batch=100, pace=0.15))
    stalled, changes = False, 0
    recovery: asyncio.Task[float] | None = None
    while not (posting.done() and stalled and changes >= 4):
        await asyncio.sleep(3)
        proc = system.procs.get("scorer-3")
        if not stalled and proc and _stopped(proc.pid):
            stalled = True
            await asyncio.sleep(20)  # the session timeout is 10 s: the group moves on without it
            proc.send_signal(signal.SIGCONT)
            recovery = asyncio.create_task(catch_up_time(system))
        elif "scorer-2" in scorers.keep:
            await scorers.retire("scorer-2")
            changes += 1
        else:
            await scorers.start("scorer-2")
            changes += 1
    await posting
    report = await check(form.report("rebalances"), system, pg, api, ledger, now)
    report.recover_s = await recovery if recovery else None
    report.faults = {"scorer_starts_and_stops": changes, "stalled": stalled, "writes_refused": fenced_writes(system)}
    assert_exact(report)
    assert stalled and refused_after_stall(system, "scorer-3"), "the stalled scorer's late write must be refused"


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


@forms
async def test_kafka_stalled_and_killed_while_clients_post(
    form: Form, system: System, ingest: httpx.AsyncClient, api: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    events, ledger, now = stream(form, seed=3), Ledger(), datetime.now(UTC)
    posting = asyncio.create_task(ledger.post(ingest, events, batch=100, pace=0.2))
    await asyncio.sleep(3)
    async with outage("kafka", "paused"):
        await asyncio.sleep(form.outage_s)
    await asyncio.sleep(form.outage_s / 3)
    os.kill(server_pid("kafka"), signal.SIGKILL)
    await asyncio.sleep(2)
    await asyncio.to_thread(server, "start", "kafka")
    recovery = asyncio.create_task(catch_up_time(system))
    await posting
    report = await check(form.report("kafka"), system, pg, api, ledger, now)
    report.recover_s = await recovery
    report.faults = {"kafka_sigstop_s": form.outage_s, "kafka_sigkill": 1}
    assert_exact(report)
    assert report.answers.get("503", 0) > 0, "ingest answered 503 while Kafka could not acknowledge"


@forms
async def test_postgres_stopped(
    form: Form,
    system: System,
    ingest: httpx.AsyncClient,
    api: httpx.AsyncClient,
    pg: asyncpg.Connection,
    run_env: dict[str, str],
) -> None:
    events, ledger, now = stream(form, seed=4), Ledger(), datetime.now(UTC)
    posting = asyncio.create_task(ledger.post(ingest, events, batch=100, pace=0.2))
    await asyncio.sleep(5)
    served = (await api.get("/v1/members", params={"ids": ledger.acknowledged[0]["member_id"]})).json()["members"]
    await pg.close()
    async with outage("postgres", "stopped"):
        stopped = time.monotonic()
        await asyncio.sleep(3)
        ready = await api.get("/readyz")
        member = await api.get(f"/v1/members/{served[0]['member_id']}") if served else None
        await asyncio.sleep(max(0.0, form.outage_s - (time.monotonic() - stopped)))
    recovery = asyncio.create_task(catch_up_time(system))
    await posting
    pg2 = await asyncpg.connect(run_env["CL_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        report = await check(form.report("postgres"), system, pg2, api, ledger, now)
        report.recover_s = await recovery
    finally:
        await pg2.close()
    report.faults = {"postgres_stopped_s": form.outage_s}
    assert_exact(report)
    assert ready.json()["checks"]["postgres"].startswith("down"), "/readyz says what is down"
    assert member is not None and member.status_code == 200, "member reads are served from Redis"
    assert report.dead_letters == 0


@forms
@pytest.mark.parametrize("how", ["stopped", "paused"])
async def test_redis_stopped_or_paused_while_the_scorer_keeps_applying(
    how: str,
    form: Form,
    system: System,
    ingest: httpx.AsyncClient,
    api: httpx.AsyncClient,
    pg: asyncpg.Connection,
) -> None:
    """Stopped, Redis refuses connections; paused (SIGSTOP), it accepts them and answers nothing."""
    events, ledger, now = stream(form, seed=5 if how == "stopped" else 7), Ledger(), datetime.now(UTC)
    posting = asyncio.create_task(ledger.post(ingest, events, batch=100, pace=0.2))
    await asyncio.sleep(5)
    async with outage("redis", how):
        away = time.monotonic()
        await asyncio.sleep(3)
        read = await api.get(f"/v1/members/{ledger.acknowledged[0]['member_id']}")
        applied_before, acked_before = await _applied(pg), len(ledger.acknowledged)
        await asyncio.sleep(max(0.0, form.outage_s - (time.monotonic() - away)))
        applied_during = await _applied(pg) - applied_before
        acked_during = len(ledger.acknowledged) - acked_before
    recovery = asyncio.create_task(catch_up_time(system))
    await posting
    report = await check(form.report("redis" if how == "stopped" else "redis_paused"), system, pg, api, ledger, now)
    report.recover_s = await recovery
    report.faults = {
        f"redis_{how}_s": form.outage_s,
        "events_acknowledged_meanwhile": acked_during,
        "records_applied_meanwhile": applied_during,
    }
    assert_exact(report)
    assert read.status_code == 200, "the API answers from PostgreSQL while Redis is away"
    # Ingest takes events while Redis is away, and the scorer applies them meanwhile: most of
    # them (a hung scorer applies none; one behind applies old records, so not all of these).
    assert acked_during > 0, "ingest takes events while Redis is away"
    assert applied_during >= acked_during / 2, "the scorer keeps applying while Redis is away"


async def _applied(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM activity"))


@forms
@pytest.mark.timeout(900)
async def test_webhook_dispatcher_killed_repeatedly_delivers_every_event_at_least_once(
    form: Form,
    system: System,
    dispatchers: Scorers,
    ingest: httpx.AsyncClient,
    api: httpx.AsyncClient,
    pg: asyncpg.Connection,
) -> None:
    """SIGKILLs of the webhook dispatcher at random moments while it POSTs the stream's level
    changes to a receiver that takes 0.3 s an answer (so POSTs are in flight at each kill)."""
    events, ledger, now = stream(form, seed=8), Ledger(), datetime.now(UTC)
    members = {e[key] for e in events for key in ("member_id", "target_member_id") if e.get(key)}
    with Receiver() as receiver:
        endpoint, _ = await add_endpoint(system, receiver.url("/slow"), "--events", "all")
        try:
            await dispatchers.start("webhooks")
            batch = 200
            pace = KILL_S * form.kills / (len(events) / batch)
            posting = asyncio.create_task(ledger.post(ingest, events, batch=batch, pace=pace))
            kills = await dispatchers.kill_at_random("webhooks", form.kills)
            await posting
            report = await check(form.report("webhooks_killed"), system, pg, api, ledger, now)
            changes = [
                (m.key.decode(), m.headers)
                for m in await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], members)
            ]
            expected = {dict(headers)["ce_id"].decode() for _, headers in changes}

            def delivered() -> set[str]:
                return {r.headers["webhook-id"] for r in receiver.got("/slow", members)}

            async def every_event() -> bool:
                return delivered() >= expected

            await eventually(every_event, timeout=600, what="every level change delivered at least once")
            # From the last event acknowledged to every level change delivered (the kills end
            # before the client's last posts).
            report.recover_s = round(time.monotonic() - ledger.last_ack, 1)
            got = receiver.got("/slow", members)
            out_of_order = []
            for member in members:  # each member's level changes first arrived in seq order
                mine = [r.payload["data"] for r in got if r.member == member]
                firsts = list(dict.fromkeys(data["seq"] for data in mine if "seq" in data))
                if firsts != sorted(firsts):
                    out_of_order.append(member)
            report.faults = {
                "dispatcher_sigkill_random": kills,
                "restarts": dict(dispatchers.restarts),
                "level_changes": len(expected),
                "delivered": len(delivered() & expected),
                "posts_answered_2xx": len(got),
                "delivered_more_than_once": len(got) - len(delivered()),
                "members_out_of_order": len(out_of_order),
            }
            assert_exact(report)
            assert expected and delivered() >= expected, "every level change reached the endpoint"
            assert out_of_order == [], out_of_order
        finally:
            await remove_endpoint(system, endpoint)
