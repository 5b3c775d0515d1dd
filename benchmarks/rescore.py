"""`cl rescore --dry-run` over many members (issue 9): wall time, members/s, records/s, peak RSS.

A scratch database (migrated with alembic) gets a template group of members whose history
(`benchmarks.workload`, the scorer topic's mix over 60 days) is applied by the scorer's own
unit of work, so `activity` and `members` hold exactly what the scorer stores; the group is
then copied set-based (generate_series) under other ids until there are enough members. The
dry run runs as `python -m services.cli rescore --dry-run --json` against it, under rules
that change reply points and the comment cap. The database is dropped at the end.

    .venv/bin/python -m benchmarks.rescore

Sizes: BENCH_RESCORE_MEMBERS (1000000), BENCH_RESCORE_EVENTS (5: events per member, its
join included), BENCH_RESCORE_GROUP (200: members of the template group). BENCH_RESCORE_KEEP=1
keeps the database (its name is printed) and BENCH_RESCORE_DATABASE=<name> reuses one;
BENCH_RESCORE_PROFILE=<file.svg> runs the dry run under `py-spy record`. BENCH_RESCORE_APPLY=1
then times `cl rescore --apply` of the same rules over the same members (views to Redis under a
prefix of its own, deleted afterwards).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from redis import Redis
from sqlalchemy import make_url

from benchmarks import workload
from services.common import db
from services.common.settings import Settings
from services.write.unit_of_work import Incoming, UnitOfWork
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import DEFAULT_RULES_PATH, default_rules

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = int(os.environ.get("BENCH_RESCORE_MEMBERS", "1000000"))
EVENTS = int(os.environ.get("BENCH_RESCORE_EVENTS", "5"))
GROUP = int(os.environ.get("BENCH_RESCORE_GROUP", "200"))


def url(role: str, database: str) -> str:
    """The scratch database as `role` (the local roles' passwords are their names; README)."""
    base = make_url(Settings().database_url)
    return base.set(username=role, password=role, database=database).render_as_string(hide_password=False)


def plain(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("+asyncpg", "")


async def create(name: str) -> None:
    conn = await asyncpg.connect(plain(url("cl", "postgres")))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" OWNER cl_owner')
    finally:
        await conn.close()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url("cl_owner", name)
    await asyncio.to_thread(command.upgrade, config, "head")


async def drop(name: str) -> None:
    conn = await asyncpg.connect(plain(url("cl", "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def fill(name: str) -> None:
    """The template group through the scorer's unit of work, then copies of it under other ids."""
    members = [f"tpl-{i}" for i in range(GROUP)]
    events = workload.events(members, GROUP * EVENTS, days=60, tag="tpl")
    incoming = []
    for offset, raw in enumerate(events):
        parsed = ActivityEvent.model_validate(raw)
        incoming += [
            Incoming(ActivityRecord(s, parsed), parsed.to_json().decode(), 0, offset) for s in parsed.subjects()
        ]
    engine = db.engine(url("cl_owner", name), "bench-rescore")
    try:
        work = UnitOfWork(engine, default_rules(), "bench", "activity")
        for start in range(0, len(incoming), 1000):
            await work.commit([], incoming[start : start + 1000], datetime.now(UTC), [])
    finally:
        await engine.dispose()
    copies = -(-MEMBERS // GROUP)
    conn = await asyncpg.connect(plain(url("cl", name)))
    try:
        span = await conn.fetchval("SELECT max(position) + 1 FROM activity")
        # Copy k renames every "tpl-" id (members, targets, events, content) to "k<k>-".
        await conn.execute(
            """
            INSERT INTO activity (member_id, event_id, position, event, source_partition, source_offset, applied_at)
            SELECT replace(member_id, 'tpl-', 'k' || k || '-'), replace(event_id, 'tpl-', 'k' || k || '-'),
                   $2 + k * $2 + position, CAST(replace(event::text, 'tpl-', 'k' || k || '-') AS jsonb),
                   source_partition, source_offset, applied_at
            FROM generate_series(0, $1 - 1) AS k, activity WHERE member_id LIKE 'tpl-%'
            """,
            copies,
            span,
        )
        await conn.execute(
            """
            INSERT INTO members (member_id, level_id, level_seq, active_score, passive_score, points,
                                 joined_at, joined_declared, first_seen, tenure_due_at, rules_version, version,
                                 updated_at)
            SELECT replace(member_id, 'tpl-', 'k' || k || '-'), level_id, level_seq, active_score, passive_score,
                   points, joined_at, joined_declared, first_seen, tenure_due_at, rules_version, 1, updated_at
            FROM generate_series(0, $1 - 1) AS k, members WHERE member_id LIKE 'tpl-%'
            """,
            copies,
        )
        await conn.execute("DELETE FROM activity WHERE member_id LIKE 'tpl-%'")
        await conn.execute("DELETE FROM members WHERE member_id LIKE 'tpl-%'")
        await conn.execute("VACUUM ANALYZE activity, members")
    finally:
        await conn.close()


async def sizes(name: str) -> tuple[int, int]:
    conn = await asyncpg.connect(plain(url("cl", name)))
    try:
        members = await conn.fetchval("SELECT count(*) FROM members")
        records = await conn.fetchval("SELECT count(*) FROM activity")
        return int(members), int(records)
    finally:
        await conn.close()


def tuned_rules(directory: str) -> str:
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] = "bench-tuned"
    rules["metrics"]["reply"]["points"] = 7
    rules["metrics"]["comment"]["daily_cap"] = 10
    path = Path(directory) / "tuned.json"
    path.write_text(json.dumps(rules))
    return str(path)


def dry_run(name: str, rules: str) -> tuple[float, dict[str, object], int]:
    """Wall seconds, the report, and the peak RSS (bytes) of the dry run's process: its VmHWM,
    read while it runs (a fork's rusage would count this process's pages before the exec)."""
    args = [sys.executable, "-m", "services.cli", "rescore", "--dry-run", "--json", rules]
    if profile := os.environ.get("BENCH_RESCORE_PROFILE"):  # then the RSS is py-spy's
        args = [str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile, "--", *args]
    env = {**os.environ, "CL_DATABASE_URL": url("cl_owner", name)}
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while True:
        try:
            out, err = proc.communicate(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            peak = max(peak, high_water_mark(proc.pid))
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"the dry run failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, json.loads(out.strip().splitlines()[-1]), peak


def apply(name: str, rules: str) -> tuple[float, str]:
    """Wall seconds of `cl rescore --apply`, and its last line."""
    prefix = f"bench:{name}:"
    env = {**os.environ, "CL_DATABASE_URL": url("cl_owner", name), "CL_REDIS_PREFIX": prefix}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "rescore", "--apply", rules],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"the apply failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    redis = Redis.from_url(Settings().redis_url)
    try:
        for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            redis.unlink(key)
    finally:
        redis.close()
    summary = next(line for line in done.stdout.splitlines() if "members rescored" in line)
    return elapsed, summary.strip()


def high_water_mark(pid: int) -> int:
    """A running process's peak resident set so far, in bytes (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)


async def main() -> None:
    name = os.environ.get("BENCH_RESCORE_DATABASE") or f"bench_rescore_{uuid.uuid4().hex[:6]}"
    keep = os.environ.get("BENCH_RESCORE_KEEP") == "1" or "BENCH_RESCORE_DATABASE" in os.environ
    try:
        if "BENCH_RESCORE_DATABASE" not in os.environ:
            started = time.perf_counter()
            await create(name)
            await fill(name)
            print(f"database {name} filled in {time.perf_counter() - started:.0f} s")
        members, records = await sizes(name)
        with tempfile.TemporaryDirectory() as directory:
            elapsed, report, rss = await asyncio.to_thread(dry_run, name, tuned_rules(directory))
        print(
            f"{members:,} members, {records:,} records: dry run {elapsed:.1f} s wall, "
            f"{members / elapsed:,.0f} members/s, {records / elapsed:,.0f} records/s, "
            f"peak RSS {rss / 2**20:.0f} MB; {report['level_changes']:,} would change level, "
            f"{report['moves']:,} level or scores"
        )
        if os.environ.get("BENCH_RESCORE_APPLY") == "1":
            with tempfile.TemporaryDirectory() as directory:
                elapsed, summary = await asyncio.to_thread(apply, name, tuned_rules(directory))
            print(f"apply {elapsed:.1f} s wall, {members / elapsed:,.0f} members/s, {records / elapsed:,.0f} records/s")
            print(f"  {summary}")
    finally:
        if not keep:
            await drop(name)
        else:
            print(f"kept database {name}")


if __name__ == "__main__":
    asyncio.run(main())
