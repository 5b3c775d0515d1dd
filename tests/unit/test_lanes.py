"""How a batch's records are split among the commit lanes."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from services.scorer.batch import Item, lanes


def item(partition: int, offset: int) -> Item:
    msg: ConsumerRecord[bytes, bytes] = ConsumerRecord("t", partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])
    return (msg, None)


@pytest.mark.parametrize("count", [1, 2, 3, 6])
def test_each_partition_commits_in_one_lane_in_the_order_fetched(count: int) -> None:
    fetched = [item(p, o) for o in range(5) for p in (4, 0, 1, 3, 2, 5)]
    split = lanes(fetched, count)
    assert sorted((m.partition, m.offset) for part in split.values() for m, _ in part) == sorted(
        (m.partition, m.offset) for m, _ in fetched
    )
    for lane, part in split.items():
        assert {msg.partition % count for msg, _ in part} == {lane}
        for p in {msg.partition for msg, _ in part}:
            assert [msg.offset for msg, _ in part if msg.partition == p] == list(range(5))
    assert len(split) == min(count, 6)
