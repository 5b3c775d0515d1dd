"""The scorer's supervised workers: a worker failing round after round backs off."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.scorer.workers import Supervisor


async def test_a_worker_failing_round_after_round_backs_off_and_recovers_at_its_interval() -> None:
    stopping, wake = asyncio.Event(), asyncio.Event()
    supervisor = Supervisor(stopping, timedelta(seconds=60))
    rounds, failing = [], True

    async def work() -> int:
        rounds.append(asyncio.get_running_loop().time())
        if failing:
            wake.set()  # as commits wake the relay: a failing worker must not take it as a go
            raise OSError("the topic is gone")
        return 0

    supervisor.start("relay", timedelta(milliseconds=10), work, wake)
    await asyncio.sleep(1.0)
    failed = len(rounds)
    # At 10 ms a round without backoff, a second holds 100 rounds; doubling waits hold about 8.
    assert 4 <= failed <= 12, failed
    assert supervisor.workers["relay"].last_error == "OSError('the topic is gone')"

    failing = False
    await asyncio.sleep(1.5)  # the longest wait so far, then rounds at the interval again
    assert supervisor.workers["relay"].failures == 0 and len(rounds) - failed > 20
    await supervisor.stop()
