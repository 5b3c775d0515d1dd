"""Publishing activity records to Kafka, with a producer that may come up after the app does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.common.kafka import producer as new_producer
from services.ingest.errors import Unavailable
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15  # an idempotent producer waits for its producer id; never forever
RETRY_MAX_S = 5  # the longest pause between start attempts while Kafka is down


class Publisher:
    """Owns the producer. Starting it happens in the background, so the app answers (503 to
    events, 503 on /readyz) while Kafka is down, and takes events as soon as Kafka is up."""

    def __init__(self, settings: IngestSettings, client_id: str = "cl-ingest") -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Publisher:
        self._starting = asyncio.create_task(self._start_until_up(), name="kafka-producer-start")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()  # flushes what is in flight
            self._producer = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def _start_until_up(self) -> None:
        pause = 0.5
        while True:
            producer = new_producer(self._settings, self._client_id)
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                await producer.stop()
                log.warning(
                    "Kafka at %s is not reachable (%r); retrying in %.1f s", self._settings.kafka_bootstrap, exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            except BaseException:  # cancelled at shutdown: close what was half opened
                await producer.stop()
                raise
            self._producer = producer
            log.info("Kafka producer started (%s)", self._settings.kafka_bootstrap)
            return

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send every (key, value) record, then wait until Kafka has acknowledged them all.

        Raises Unavailable when Kafka fails or the publish timeout passes; some records may be
        on the topic then, which is safe because the client retries with the same event ids.
        """
        producer = self._producer
        if producer is None:
            raise Unavailable("Kafka is not reachable yet; retry later", self._settings.retry_after_s)
        deliveries: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(self._settings.publish_timeout.total_seconds()):
                # Send all before awaiting any, so the records of a request travel in few batches.
                for key, value in records:
                    delivery = await producer.send(topic, value, key=key)
                    delivery.add_done_callback(_retrieved)
                    deliveries.append(delivery)
                await asyncio.gather(*deliveries)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publishing %d records to %s failed: %r", len(records), topic, exc)
            raise Unavailable("Kafka did not take the events; retry later", self._settings.retry_after_s) from exc

    async def kafka_answers(self, timeout_s: float = 2.0) -> str | None:
        """None when the producer is up and Kafka answers a metadata request in time, else why not."""
        if self._producer is None:
            return "producer not started"
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer.client.fetch_all_metadata()
        except TimeoutError:
            return f"no metadata answer within {timeout_s:g} s"
        except KafkaError as exc:
            return f"metadata request failed: {exc!r}"
        return None


def _retrieved(delivery: asyncio.Future[object]) -> None:
    # A delivery nobody awaits any more (the request already failed) must not log
    # "exception was never retrieved" when it fails later.
    if not delivery.cancelled():
        delivery.exception()
