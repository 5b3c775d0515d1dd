"""The dispatcher's Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "webhooks_records_total", "Records of level-changes read", ["outcome"]
)  # recorded: deliveries recorded for it; unwanted: no endpoint takes it; undecodable
DELIVERIES = Counter("webhooks_deliveries_recorded_total", "Deliveries recorded as pending")
ATTEMPTS = Counter("webhooks_attempts_total", "POSTs to endpoints", ["outcome"])  # delivered, retry, failed
ATTEMPT_SECONDS = Histogram("webhooks_attempt_duration_seconds", "One POST, from connect to the answer")
DISABLED = Counter("webhooks_endpoints_disabled_total", "Endpoints disabled after failing too long")
PENDING = Gauge("webhooks_pending_deliveries", "Deliveries not yet made")
PENDING_AGE = Gauge("webhooks_pending_oldest_age_seconds", "Age of the oldest delivery not yet made")
