"""The example notifier (examples/notifier/) against the whole system: it acts once per
promotion, never on a demotion, and not again when level changes are delivered twice; an
erased member's tombstone makes it forget them, so a later member of the same id is announced."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT
from tests.e2e.conftest import System, post_events
from tests.integration.test_cli import cl
from tests.support import eventually

NOTIFIER = ROOT / "examples" / "notifier" / "notifier.py"


@contextmanager
def notifier(system: System, out: Path, group: str) -> Iterator[None]:
    env = {**system.env, "CL_KAFKA_BOOTSTRAP": system.bootstrap, "NOTIFIER_GROUP": group, "NOTIFIER_OUT": str(out)}
    with open(system.logs / "notifier.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(NOTIFIER)], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, f"the notifier failed; see {system.logs / 'notifier.log'}"


def acted(out: Path, member: str) -> list[dict[str, Any]]:
    lines = out.read_text().splitlines() if out.exists() else []
    return [line for line in map(json.loads, lines) if line["member_id"] == member]


def event(kind: str, member: str, content_id: str) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(hours=1)
    return {
        "event_id": uuid.uuid4().hex,
        "type": kind,
        "member_id": member,
        "occurred_at": at.isoformat(),
        "content_id": content_id,
    }


async def test_the_notifier_acts_once_per_promotion_across_restarts_and_redeliveries(
    system: System, ingest: httpx.AsyncClient, tmp_path: Path
) -> None:
    member, out = f"noti-{uuid.uuid4().hex[:10]}", tmp_path / "promotions.jsonl"

    async def seqs_acted_are(expected: list[int]) -> bool:
        return [line["seq"] for line in acted(out, member)] == expected

    # seq 1 promoted (article), seq 2 demoted (the article removed), seq 3 promoted again.
    with notifier(system, out, group=f"notifier-{uuid.uuid4().hex}"):
        await post_events(ingest, [event("article", member, "a1"), event("content_removed", member, "a1")])
        await post_events(ingest, [event("article", member, "a2")])
        await eventually(lambda: seqs_acted_are([1, 3]), timeout=60, what="promotions 1 and 3 acted on")

    # A group with no offsets gets every level change again: the notifier must not act twice.
    # Seq 4 demotes and seq 5 promotes; 5 comes after 1 to 4 on the member's partition.
    with notifier(system, out, group=f"notifier-{uuid.uuid4().hex}"):
        await post_events(ingest, [event("content_removed", member, "a2"), event("article", member, "a3")])
        await eventually(lambda: seqs_acted_are([1, 3, 5]), timeout=60, what="promotion 5 acted on")
    first, _, last = acted(out, member)
    assert (first["level"], first["cause"], last["level"]) == ("general_contributor", "activity", "general_contributor")

    # The member is erased: the notifier forgets them on the tombstone, and a new member of the
    # same id (seq 1 again, so the same event id as the erased member's first) is announced.
    env = {**system.env, "CL_DATABASE_URL": system.database_urls.get("scorer", system.env["CL_DATABASE_URL"])}
    code, said = await cl(env, "member", "erase", member, "--operator", "test")
    assert code == 0, said
    with notifier(system, out, group=f"notifier-{uuid.uuid4().hex}"):
        await eventually(lambda: seqs_acted_are([]), timeout=60, what="the erased member forgotten")
        await post_events(ingest, [event("article", member, "b1")])
        await eventually(lambda: seqs_acted_are([1]), timeout=60, what="the new member's promotion acted on")
