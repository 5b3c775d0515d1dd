"""The scorer's Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("scorer_records_total", "Activity records consumed", ["outcome"])
DEAD_LETTERS = Counter(
    "scorer_dead_letters_total", "Records sent to the dead-letter topic", ["reason"]
)  # invalid: not a valid event; refused: the store refused it
LEVEL_CHANGES = Counter("scorer_level_changes_total", "Level changes recorded", ["cause"])
CODE_FAULTS = Counter(
    "scorer_code_faults_total",
    "Records whose scoring raised an error of the scorer's own code; their partition stops (not dead-lettered)",
    ["partition"],
)
FENCED = Counter("scorer_fenced_batches_total", "Batches whose offset write was refused")
PUBLISHED = Counter("scorer_level_changes_published_total", "Level changes published to Kafka")
OUT_OF_RANGE = Counter(
    "scorer_offsets_out_of_range_total",
    "Stored offsets the broker no longer holds (retention, a recreated topic); the partition resumed at its log start",
    ["partition", "where"],
)
WORKER_FAILURES = Counter("scorer_worker_failures_total", "Failed rounds of a background worker", ["worker"])
BATCH_SECONDS = Histogram("scorer_batch_duration_seconds", "From a fetched batch to its commit")
LAG = Gauge("scorer_consumer_lag", "Records of the partition not yet committed", ["partition"])
OUTBOX = Gauge("scorer_outbox_backlog", "Level changes not yet published to Kafka")
OUTBOX_AGE = Gauge("scorer_outbox_oldest_age_seconds", "Age of the oldest level change not yet published")
UNSYNCED = Gauge("scorer_redis_unsynced_members", "Members whose latest view Redis may lack")
