"""The dead-letter topic: a copy of each record that cannot be applied, with its reason."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer, ConsumerRecord

from services.scorer.metrics import DEAD_LETTERS, RECORDS

log = logging.getLogger("scorer")

# The dead-letter copy of a record stays under the producer's 1 MiB request limit.
MAX_VALUE = 900 * 1024
MAX_KEY = 1024


async def dead_letter(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[ConsumerRecord[bytes, bytes], str]], kind: str
) -> None:
    """Send each record with its reason and where it came from; `kind` labels the metric
    (invalid: not a valid event; refused: the store refused it)."""
    sent = []
    for msg, reason in records:
        log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason[:300])
        headers = [
            ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()),
            ("reason", reason[:1000].encode(errors="replace")),
        ]
        key, value = msg.key, msg.value
        # Too large to copy whole: the head goes, and a header keeps the original size.
        if key is not None and len(key) > MAX_KEY:
            headers.append(("truncated_key_from", str(len(key)).encode()))
            key = key[:MAX_KEY]
        if value is not None and len(value) > MAX_VALUE:
            headers.append(("truncated_value_from", str(len(value)).encode()))
            value = value[:MAX_VALUE]
        sent.append(await producer.send(topic, value, key=key, headers=headers))
    await asyncio.gather(*sent)
    DEAD_LETTERS.labels(kind).inc(len(records))
    RECORDS.labels("dead_lettered").inc(len(records))
