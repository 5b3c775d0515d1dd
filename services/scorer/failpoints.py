"""Crash points for the fault suite (`make faults`); unset in production.

`CL_FAILPOINTS="after_commit:kill:0.02,before_commit:stop:@3"` makes the scorer, at that
point, SIGKILL itself (a crash) or SIGSTOP itself (a stall that outlives its Kafka session;
the suite sends SIGCONT): with a probability, or `@n` on the n-th time it passes there. Each
firing is logged first, so the suite can count them.
"""

from __future__ import annotations

import logging
import os
import random
import signal

from services.common.settings import comma_separated

log = logging.getLogger("scorer.failpoints")
ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def parse(spec: str) -> dict[str, tuple[signal.Signals, str]]:
    points = {}
    for item in comma_separated(spec):
        try:
            name, action, when = item.split(":")
            valid = action in ACTIONS and (int(when[1:]) >= 1 if when.startswith("@") else 0 <= float(when) <= 1)
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"failpoint {item!r}: want name:kill|stop:probability or name:kill|stop:@n")
        points[name] = (ACTIONS[action], when)
    return points


class Failpoints:
    def __init__(self, spec: str) -> None:
        self.points = parse(spec)
        self.passes: dict[str, int] = {}

    def hit(self, name: str) -> None:
        point = self.points.get(name)
        if point is None:
            return
        sig, when = point
        self.passes[name] = self.passes.get(name, 0) + 1
        if self.passes[name] == int(when[1:]) if when.startswith("@") else random.random() < float(when):
            log.warning("failpoint %s fired: %s", name, sig.name)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), sig)
