"""Micro-benchmark of the scorer's record decoding: records shaped like the benchmark's
workload, decoded one by one as the scorer does. `python -m benchmarks.decode [count]`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from benchmarks.workload import events, records
from services.scorer.records import decode_record


def main(count: int = 200_000) -> None:
    members = [f"m-{i}" for i in range(20_000)]
    batch = records(events(members, count, end=datetime(2026, 11, 30, tzinfo=UTC), days=30))[:count]
    for key, value in batch[:1000]:  # warm up
        decode_record(key, value)
    start = time.perf_counter()
    for key, value in batch:
        decode_record(key, value)
    elapsed = time.perf_counter() - start
    print(f"{len(batch):,} records in {elapsed:.2f} s: {len(batch) / elapsed:,.0f} records/s")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
