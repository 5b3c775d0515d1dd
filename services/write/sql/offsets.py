"""`consumer_offsets`: where each partition's consumer resumes, and the epoch that fences it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class Claim:
    partition: int
    next_offset: int | None  # None: nothing processed yet, start at the beginning
    epoch: int


@dataclass(frozen=True)
class OffsetMove:
    partition: int
    epoch: int
    first_offset: int  # the batch's first record: must be where the stored offset says
    next_offset: int


async def claim_partitions(
    conn: AsyncConnection, group_id: str, topic: str, partitions: list[int], owner: str
) -> list[Claim]:
    """Take ownership of partitions: a new epoch for each, so the previous owner's writes fail."""
    rows = await conn.execute(
        text(
            """
            INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, epoch, owner, updated_at)
            SELECT :group_id, :topic, p, NULL, 1, :owner, now() FROM unnest(CAST(:partitions AS int[])) AS p
            ON CONFLICT (group_id, topic, partition) DO UPDATE
                SET epoch = consumer_offsets.epoch + 1, owner = excluded.owner, updated_at = now()
            RETURNING partition, next_offset, epoch
            """
        ),
        {"group_id": group_id, "topic": topic, "partitions": partitions, "owner": owner},
    )
    return [Claim(row.partition, row.next_offset, row.epoch) for row in rows]


async def stored_offsets(conn: AsyncConnection, group_id: str, topic: str, partitions: list[int]) -> list[Claim]:
    rows = await conn.execute(
        text(
            "SELECT partition, next_offset, epoch FROM consumer_offsets"
            " WHERE group_id = :group_id AND topic = :topic AND partition = ANY(CAST(:partitions AS int[]))"
        ),
        {"group_id": group_id, "topic": topic, "partitions": partitions},
    )
    return [Claim(row.partition, row.next_offset, row.epoch) for row in rows]


async def advance_offsets(conn: AsyncConnection, group_id: str, topic: str, moves: list[OffsetMove]) -> set[int]:
    """Store where each partition resumes, but only for the owner's epoch and only contiguously.

    Returns the partitions whose write was refused. Taking these row locks first also orders
    this transaction after any concurrent claim of the same partitions.
    """
    rows = await conn.execute(
        text(
            """
            UPDATE consumer_offsets AS o SET next_offset = m.next_offset, updated_at = now()
            FROM unnest(CAST(:partitions AS int[]), CAST(:epochs AS bigint[]),
                        CAST(:firsts AS bigint[]), CAST(:nexts AS bigint[])) AS m(partition, epoch, first, next_offset)
            WHERE o.group_id = :group_id AND o.topic = :topic AND o.partition = m.partition
              AND o.epoch = m.epoch AND (o.next_offset IS NULL OR o.next_offset = m.first)
            RETURNING o.partition
            """
        ),
        {
            "group_id": group_id,
            "topic": topic,
            "partitions": [m.partition for m in moves],
            "epochs": [m.epoch for m in moves],
            "firsts": [m.first_offset for m in moves],
            "nexts": [m.next_offset for m in moves],
        },
    )
    return {m.partition for m in moves} - {row.partition for row in rows}


async def reset_offset(
    conn: AsyncConnection, group_id: str, topic: str, partition: int, epoch: int, next_offset: int
) -> bool:
    """Move a partition's stored offset (out of range on the broker), if this epoch still owns it."""
    row = await conn.execute(
        text(
            "UPDATE consumer_offsets SET next_offset = :next, updated_at = now()"
            " WHERE group_id = :group_id AND topic = :topic AND partition = :partition AND epoch = :epoch"
            " RETURNING 1"
        ),
        {"group_id": group_id, "topic": topic, "partition": partition, "epoch": epoch, "next": next_offset},
    )
    return row.first() is not None
