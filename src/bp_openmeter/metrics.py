"""Prometheus metrics of the api and the sink (served on the telemetry port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGEST_EVENTS = Counter(
    "bpom_ingest_events_total", "Events received by the ingest API, by outcome", ["outcome"]
)  # accepted | duplicate | rejected
INGEST_REQUESTS = Counter("bpom_ingest_requests_total", "Ingest requests, by HTTP status", ["status"])
PUBLISH_SECONDS = Histogram(
    "bpom_publish_seconds",
    "Time from publishing a request's events to the last JetStream ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBLISH_FAILURES = Counter(
    "bpom_publish_failures_total", "Ingest publishes JetStream did not acknowledge (answered 503), by cause", ["cause"]
)
for _cause in (
    "storage",
    "refused",
    "timeout",
    "unavailable",
):  # every series from the start: increase() sees the first
    PUBLISH_FAILURES.labels(_cause)
DEDUPE_DEGRADED = Gauge(
    "bpom_dedupe_degraded", "1 while Valkey is unreachable and dedupe relies on JetStream and PostgreSQL only"
)
DEDUPE_ERRORS = Counter("bpom_dedupe_errors_total", "Valkey dedupe calls that failed")
DEDUPE_SKIPPED = Counter(
    "bpom_dedupe_skipped_total",
    "Valkey dedupe calls not made because Valkey failed less than valkey.recheckInterval ago",
)
AUTH_FAILURES = Counter("bpom_auth_failures_total", "API requests refused by authentication, by reason", ["reason"])

SINK_STORED = Counter("bpom_sink_events_stored_total", "Events newly stored in PostgreSQL")
SINK_REDELIVERED = Counter(
    "bpom_sink_events_already_stored_total", "Delivered events that were already stored (redelivery, replay)"
)
SINK_BATCHES = Counter("bpom_sink_batches_total", "Sink batches, by result", ["result"])  # committed | failed
SINK_BATCH_SECONDS = Histogram(
    "bpom_sink_batch_seconds",
    "Time to store and fold one batch, commit included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SINK_CONFLICTING = Counter(
    "bpom_sink_events_conflicting_total",
    "Delivered events whose source and id were stored before with other content (dropped; the first stays)",
)
SINK_DEAD_LETTERS = Counter("bpom_sink_dead_letters_total", "Events moved to the dead-letter table")
SINK_STALLED = Gauge(
    "bpom_sink_stalled_seconds",
    "Seconds since a sink worker last made progress (finished a batch, or found nothing to fetch): "
    "the longest among the process's workers",
)
SINK_STALL_TIMEOUT = Gauge(
    "bpom_sink_stall_timeout_seconds", "sink.stallTimeout: a stall longer than this fails /healthz/ready"
)
SEALING_STALLED = Gauge(
    "bpom_sealing_stalled_seconds",
    "Seconds since this sink's sealer last moved the sealing watermark or found nothing due (0 while it waits "
    "for its next round)",
)
SEALING_STALL_TIMEOUT = Gauge(
    "bpom_sealing_stall_timeout_seconds", "sink.sealingStallTimeout: sealing stalled longer fails /healthz/ready"
)
SEALING_LAG = Gauge(
    "bpom_sealing_lag_seconds",
    "Seconds the sealing watermark (minutes folded into hourly rollups) is behind where it should be: now less "
    "the 2-minute grace period; up to a round (30 s) and a minute when sealing keeps up",
)
SINK_LAG = Gauge(
    "bpom_sink_lag_messages", "Messages of the sink's consumer not yet acknowledged (pending and in flight)"
)
SINK_FRESHNESS = Histogram(
    "bpom_sink_freshness_seconds",
    "From ingest (API receipt) to stored and folded",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

RAW_EVENTS_FROM = Gauge(
    "bpom_raw_events_retained_from_timestamp_seconds",
    "The retention horizon (Unix time): raw events before it are dropped (retention.rawEvents); 0 while none is",
)
PARTITIONS_DROPPED = Counter(
    "bpom_event_partitions_dropped_total", "Daily partitions of raw events dropped past retention"
)
PARTITION_DROP_SECONDS = Histogram(
    "bpom_event_partition_drop_seconds",
    "Time to detach (concurrently) and drop one partition of raw events",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PARTITION_MAINTENANCE_FAILURES = Counter(
    "bpom_event_partition_maintenance_failures_total",
    "Rounds of partition maintenance (create ahead, drop past retention) that failed; retried",
)

QUERY_SECONDS = Histogram(
    "bpom_query_seconds",
    "Meter query latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

API_REFUSALS = Counter(
    "bpom_api_limit_refusals_total",
    "API connections and requests refused or closed at a limit, by limit (docs/guarantees.md)",
    ["limit"],
)
API_BODY_BYTES_HELD = Gauge("bpom_api_body_bytes_held", "Request body bytes the api holds now (api.bodyBudgetBytes)")
API_CLIENTS_GONE = Counter(
    "bpom_api_client_gone_total", "Requests whose client went away before the answer; their SQL was cancelled"
)
