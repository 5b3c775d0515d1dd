"""Where each partition's consumer resumes, kept in PostgreSQL with the totals: the claim that
fences the previous owner, the offsets read back after a fence, and a reset when the broker no
longer holds the stored offset. (Offsets move with the records, in `UnitOfWork.commit`.)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.write.sql import offsets
from services.write.sql.offsets import Claim


class Offsets:
    def __init__(self, engine: AsyncEngine, group_id: str, topic: str) -> None:
        self.engine, self.group_id, self.topic = engine, group_id, topic

    async def claim(self, partitions: list[int], owner: str) -> list[Claim]:
        """Take ownership of partitions: a new epoch for each, so the previous owner's writes fail."""
        async with self.engine.begin() as conn:
            return await offsets.claim_partitions(conn, self.group_id, self.topic, partitions, owner)

    async def stored(self, partitions: list[int]) -> list[Claim]:
        async with self.engine.connect() as conn:
            return await offsets.stored_offsets(conn, self.group_id, self.topic, partitions)

    async def reset(self, partition: int, epoch: int, next_offset: int) -> bool:
        """Move a partition's stored offset, if this epoch still owns it."""
        async with self.engine.begin() as conn:
            return await offsets.reset_offset(conn, self.group_id, self.topic, partition, epoch, next_offset)
