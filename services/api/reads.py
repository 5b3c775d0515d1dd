"""Member views of concurrent requests, read from Redis together."""

from __future__ import annotations

import asyncio
from typing import Any

from services.common.members import MemberCache

Views = dict[str, dict[str, Any]]


class CoalescedViews:
    """Reads the views every request of one turn of the event loop wants in one Redis pipeline.

    A round trip through redis-py costs the API more CPU than all the rest of a member read, and
    under load many requests arrive together: they share one. A request alone waits for nothing
    more than its own read.
    """

    def __init__(self, cache: MemberCache) -> None:
        self.cache = cache
        self._wanted: list[str] = []
        self._read: asyncio.Task[Views] | None = None

    async def get_many(self, member_ids: list[str]) -> Views:
        if self._read is None:
            # Its first step runs after those of the requests already scheduled in this turn,
            # which add their ids here before it takes them.
            self._read = asyncio.ensure_future(self._read_wanted())
        self._wanted += member_ids
        found = await asyncio.shield(self._read)  # a request cancelled leaves the read to the others
        return {m: found[m] for m in member_ids if m in found}

    async def _read_wanted(self) -> Views:
        wanted, self._wanted, self._read = list(dict.fromkeys(self._wanted)), [], None
        return await self.cache.get_many(wanted)
