"""The scorer's batch transaction alone: the scorer topic's records (as `make bench` makes them),
decoded once up front, then committed through the scorer's own `UnitOfWork.commit` in batches
of 2,000 records (`CL_BATCH_MAX_RECORDS` when its figures in docs/PERFORMANCE.md were taken; it
is 5,000 now), as partitions of one consumer that claimed them. No Kafka
and no Redis: what it measures is the transaction, the scorer's CPU around it and PostgreSQL's.

`python -m benchmarks.commit [records] [lanes] [badges]` (200,000 events, about 227,000 records;
lanes: transactions in flight at once, each on partitions of its own, as `CL_COMMIT_LANES` runs
them; badges: `with` the default rules, `without` their badge catalogue, or `both`, alternating
with and without twice in one run, to show what evaluating and granting badges costs).
Uses `make run`'s PostgreSQL, on a database of its own per pass that it drops at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks import workload
from benchmarks.bench import Bench, cpu_seconds
from services.scorer.records import decode_record
from services.write.sql import offsets
from services.write.sql.offsets import OffsetMove
from services.write.unit_of_work import Incoming, UnitOfWork
from shared.rules import Rules

PARTITIONS = 6
BATCH = 2000


def without_badges(rules: Rules) -> Rules:
    """The same rules with no badge catalogue, under a version of their own."""
    return Rules.model_validate({**rules.model_dump(), "version": f"{rules.version}-no-badges", "badges": []})


async def main(count: int = 200_000, lanes: int = 1, badges: str = "with") -> None:
    passes = {"with": ["with"], "without": ["without"], "both": ["with", "without", "with", "without"]}[badges]
    bench = Bench()
    members = [f"m-{i}" for i in range(20_000)]
    raw = workload.records(workload.events(members, count, end=datetime(2026, 11, 30, tzinfo=UTC), days=30))
    # Each record on its member's partition, in order, as ingest keys them.
    next_offset = [0] * PARTITIONS
    placed: list[Incoming] = []
    for key, value in raw:
        partition = zlib.crc32(key) % PARTITIONS
        placed.append(Incoming(decode_record(key, value), value.decode(), partition, next_offset[partition]))
        next_offset[partition] += 1
    # Lanes own disjoint partitions (as the scorer's lanes never share one partition's records).
    by_lane = [[i for i in placed if i.partition % lanes == lane] for lane in range(lanes)]
    try:
        for n, catalogue in enumerate(passes):
            rules = bench.settings.rules if catalogue == "with" else without_badges(bench.settings.rules)
            await one_pass(bench, f"commit{n}", rules, by_lane, f"{lanes} lane(s), {catalogue} badges")
    finally:
        await bench.cleanup()


async def one_pass(bench: Bench, name: str, rules: Rules, by_lane: list[list[Incoming]], what: str) -> None:
    """Commit the records on a database of its own under these rules, and print the rates."""
    db = await bench.database(name)
    engine = create_async_engine(db.url("cl_scorer"), pool_size=len(by_lane) + 1)
    group, topic = f"bench-commit-{db.name}", "bench-commit"
    async with engine.begin() as conn:
        claims = await offsets.claim_partitions(conn, group, topic, list(range(PARTITIONS)), "bench")
    epochs = {c.partition: c.epoch for c in claims}
    work = UnitOfWork(engine, rules, group, topic)

    async def lane(items: list[Incoming]) -> None:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            ends: dict[int, tuple[int, int]] = {}
            for i in batch:
                ends[i.partition] = (ends.get(i.partition, (i.offset, 0))[0], i.offset)
            moves = [OffsetMove(p, epochs[p], first, last + 1) for p, (first, last) in ends.items()]
            await work.commit(moves, batch, datetime.now(UTC), [])

    # Warm up (rules read, a connection per lane), then time the rest.
    await asyncio.gather(*(lane(items[: BATCH * 2]) for items in by_lane))
    by_lane = [items[BATCH * 2 :] for items in by_lane]
    total = sum(map(len, by_lane))
    conn = await asyncpg.connect(db.dsn)
    try:  # PostgreSQL's CPU is that of this database's backends: others share the server
        backends = {r["pid"] for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", db.name)}
    finally:
        await conn.close()
    backends.discard(None)
    before, cpu0 = cpu_seconds(backends, {}), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(lane(items) for items in by_lane))
    wall = time.perf_counter() - started
    cpu, pg = time.process_time() - cpu0, cpu_seconds(backends, {})["scorer"] - before["scorer"]
    conn = await asyncpg.connect(db.dsn)
    try:
        granted = await conn.fetchval("SELECT count(*) FROM member_badges")
        changes = await conn.fetchval("SELECT count(*) FROM level_changes WHERE seq IS NOT NULL")
    finally:
        await conn.close()
    print(
        f"{total:,} records, {what}: {total / wall:,.0f} records/s;"
        f" per record: scorer CPU {cpu / total * 1e6:.0f} µs, PostgreSQL CPU {pg / total * 1e6:.0f} µs;"
        f" {granted:,} badges granted, {changes:,} level changes (warm-up included)"
    )
    await engine.dispose()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(int(args[0]) if args else 200_000, int(args[1]) if args[1:] else 1, args[2] if args[2:] else "with")
    )
