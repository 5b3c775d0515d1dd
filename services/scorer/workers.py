"""The scorer's background workers (relay, tenure sweep, Redis repair, health, period
pruning), supervised together: an error never ends one, and /readyz names any that has ended
or keeps failing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from services.common.failures import transient
from services.scorer.metrics import WORKER_FAILURES

log = logging.getLogger("scorer")

Work = Callable[[], Awaitable[int]]  # one round; a true count asks for another round at once
# A worker failing round after round waits twice as long each time (with jitter), up to this:
# a relay that sends and then cannot mark the rows sent would otherwise resend them on every
# commit's wake-up, flooding the topic with duplicates.
LONGEST_BACKOFF_S = 30.0


@dataclass
class Worker:
    """A background loop and how its last rounds went, for /readyz."""

    task: asyncio.Task[None] | None = None
    failing_since: float | None = None  # a permanent failure, and every round since failed
    last_error: str = ""
    failures: int = 0  # rounds failed in a row


class Supervisor:
    def __init__(self, stopping: asyncio.Event, stall: timedelta) -> None:
        self.stopping = stopping
        self.stall = stall.total_seconds()
        self.workers: dict[str, Worker] = {}

    def start(self, name: str, interval: timedelta, work: Work, wake: asyncio.Event | None = None) -> None:
        """Run `work` every `interval` (or sooner when `wake` is set), until stopped."""
        worker = self.workers[name] = Worker()
        worker.task = asyncio.create_task(self._every(worker, name, interval, work, wake), name=name)

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def problems(self) -> dict[str, str]:
        """Each worker that has ended, or failed with a permanent error for longer than the stall timeout."""
        now, out = time.monotonic(), {}
        for name, worker in self.workers.items():
            if worker.task is not None and worker.task.done() and not self.stopping.is_set():
                out[name] = "dead: the worker has ended"
            elif worker.failing_since is not None and now - worker.failing_since > self.stall:
                out[name] = f"failing for {now - worker.failing_since:.0f} s: {worker.last_error}"
        return out

    async def _every(
        self, worker: Worker, name: str, interval: timedelta, work: Work, wake: asyncio.Event | None
    ) -> None:
        while not self.stopping.is_set():
            try:
                more = await work()
                worker.failing_since, worker.last_error, worker.failures = None, "", 0
            except Exception as exc:
                WORKER_FAILURES.labels(name).inc()
                worker.last_error = repr(exc)[:300]
                worker.failures += 1
                if transient(exc):
                    log.warning("%s failed, will retry: %r", name, exc)
                else:
                    log.exception("%s failed, will retry", name)
                    worker.failing_since = worker.failing_since or time.monotonic()
                more = 0
            if more:
                continue
            if worker.failures:  # not woken early: wait out the backoff
                backoff = min(LONGEST_BACKOFF_S, interval.total_seconds() * 2 ** (worker.failures - 1))
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                continue
            if wake is None:
                await asyncio.sleep(interval.total_seconds())
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval.total_seconds())
                wake.clear()
