"""A notifier of promotions: acts once per promotion on the level-changes topic.

The action here appends one JSON line per promotion to a file (NOTIFIER_OUT), standing in for
an e-mail or a badge. It needs only aiokafka; see README.md beside it for what it shows.

    CL_KAFKA_BOOTSTRAP=localhost:19092 NOTIFIER_OUT=promotions.jsonl python notifier.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

PROMOTED = "community.level.promoted"


class Promotions:
    """The action, idempotent by event_id: what it did is its own record of what it did."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        if path.exists():
            self.done = {json.loads(line)["event_id"] for line in path.read_text().splitlines() if line}

    def act(self, change: dict[str, Any]) -> None:
        if change["event_id"] in self.done:  # a redelivery, or acted on before a restart
            return
        line = {
            "event_id": change["event_id"],
            "member_id": change["member_id"],
            "seq": change["seq"],
            "level": change["to_level"]["id"],
            "cause": change["cause"]["kind"],  # activity, tenure, rescore or override
        }
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.done.add(change["event_id"])

    def forget(self, member_id: str) -> None:
        """A tombstone: the member was erased. Drop what was recorded about them, their event
        ids too: a later member of the same id counts seq from 1 again, so its event ids (derived
        from member and seq) repeat those of the erased one and must not be skipped."""
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line]
        kept = [line for line in lines if json.loads(line)["member_id"] != member_id]
        if len(kept) == len(lines):
            return
        fresh = self.path.with_name(self.path.name + ".tmp")
        with fresh.open("w") as out:
            out.write("".join(line + "\n" for line in kept))
            out.flush()
            os.fsync(out.fileno())
        fresh.replace(self.path)  # atomic: a crash leaves the old record or the new one
        self.done = {json.loads(line)["event_id"] for line in kept}


async def main() -> None:
    consumer = AIOKafkaConsumer(
        os.environ.get("CL_TOPIC_LEVEL_CHANGES", "level-changes"),
        bootstrap_servers=os.environ.get("CL_KAFKA_BOOTSTRAP", "localhost:19092"),
        group_id=os.environ.get("NOTIFIER_GROUP", "promotion-notifier"),
        enable_auto_commit=False,  # offsets are committed only once the batch was acted on
        auto_offset_reset="earliest",
    )
    promotions = Promotions(Path(os.environ.get("NOTIFIER_OUT", "promotions.jsonl")))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():  # one partition each, so each member's changes in seq order
                for record in records:
                    headers = {name: value.decode() for name, value in record.headers}
                    if record.value is None:  # an erased member's tombstone (its key is the member)
                        promotions.forget(record.key.decode())
                    elif headers.get("ce_type") == PROMOTED:  # demotions are not announced
                        promotions.act(json.loads(record.value))
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
