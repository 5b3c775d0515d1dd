"""The example webhook receiver (examples/webhook-receiver/) against the whole system: it takes
every event the dispatcher signs, once per webhook-id across its own restarts, refuses a
request it cannot verify, and forgets an erased member."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from services.webhooks.delivery import signed_headers
from services.write.webhooks import new_secret
from tests.conftest import ROOT
from tests.e2e.conftest import System, post_events
from tests.e2e.test_webhooks import add_endpoint, remove_endpoint, ups_and_downs
from tests.integration.test_cli import cl
from tests.support import eventually, free_port

RECEIVER = ROOT / "examples" / "webhook-receiver" / "receiver.py"


@contextmanager
def receiver(system: System, db: Path, port: int, secret: str) -> Iterator[str]:
    env = {**system.env, "WEBHOOK_SECRET": secret, "RECEIVER_DB": str(db), "RECEIVER_PORT": str(port)}
    with subprocess.Popen(
        [sys.executable, str(RECEIVER)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
            yield f"http://127.0.0.1:{port}/hooks"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, "the receiver failed"


def stored(db: Path, member: str) -> list[dict[str, object]]:
    """The level changes the receiver acted on for a member, in the order it did."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT data FROM events WHERE member_id = ? AND type LIKE 'community.level.%' ORDER BY rowid", (member,)
        ).fetchall()
    return [orjson.loads(data) for (data,) in rows]


async def test_the_receiver_acts_once_per_event_refuses_forgeries_and_forgets_the_erased(
    system: System, ingest: httpx.AsyncClient, tmp_path: Path
) -> None:
    kept, erased = (f"rcv-{uuid.uuid4().hex[:10]}" for _ in range(2))
    db, port = tmp_path / "events.sqlite", free_port()
    endpoint, secret = await add_endpoint(system, f"http://127.0.0.1:{port}/hooks", "--events", "all")
    try:
        with receiver(system, db, port, secret) as url:
            for member in (kept, erased):
                await post_events(ingest, ups_and_downs(member, 4))

            async def all_four() -> bool:
                return all(len(stored(db, member)) == 4 for member in (kept, erased))

            await eventually(all_four, timeout=60, what="four level changes of each member stored")
        for member in (kept, erased):
            assert [change["seq"] for change in stored(db, member)] == [1, 2, 3, 4]

        # Restarted, it still knows what it did: a redelivery of an event is not acted on again.
        with receiver(system, db, port, secret) as url:
            first = stored(db, kept)[0]
            body = orjson.dumps({"type": "community.level.promoted", "timestamp": first["emitted_at"], "data": first})
            async with httpx.AsyncClient() as client:

                async def post(body: bytes, secret: str, webhook_id: str = str(first["event_id"])) -> httpx.Response:
                    headers = signed_headers([secret], webhook_id, datetime.now(UTC), body)
                    return await client.post(url, content=body, headers=headers)

                again = await post(body, secret)
                assert (again.status_code, again.text) == (200, "already done")
                # Signed with another secret, or changed after signing: refused, and not stored.
                forged = first | {"event_id": str(uuid.uuid4()), "seq": 5}
                refused = await post(orjson.dumps({"type": "community.level.promoted", "data": forged}), new_secret())
                assert refused.status_code == 401 and "signature" in refused.text
                signed = signed_headers([secret], str(forged["event_id"]), datetime.now(UTC), body)
                tampered = await client.post(url, content=body.replace(b'"seq":1', b'"seq":5'), headers=signed)
                assert tampered.status_code == 401
                unsigned = await client.post(url, content=body)
                assert unsigned.status_code == 401 and "Missing required headers" in unsigned.text
            assert [change["seq"] for change in stored(db, kept)] == [1, 2, 3, 4]

            # An erasure reaches it after the member's changes: it forgets the member.
            code, said = await cl(system.env, "member", "erase", erased, "--operator", "test")
            assert code == 0, said

            async def forgotten() -> bool:
                return stored(db, erased) == []

            await eventually(forgotten, timeout=60, what="the erased member forgotten")
            assert len(stored(db, kept)) == 4
    finally:
        await remove_endpoint(system, endpoint)
