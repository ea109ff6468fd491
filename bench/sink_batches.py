"""How large the sink's batches really were: from the sinks' own metrics.

`sink.batchSize` only caps a batch; a fetch takes what is pending, so under steady
ingest a batch holds what arrived while the previous one was stored. Each batch of
live traffic writes about one rollup row per (meter, subject, groups) it touches,
whatever its size, so its size decides much of PostgreSQL's CPU per event.
"""

from __future__ import annotations

from dataclasses import dataclass

from testkit.metrics import samples
from testkit.stack.local import LocalStack


@dataclass(frozen=True)
class SinkBatches:
    committed: int
    events: int  # newly stored
    seconds: float  # storing them, commits included

    @property
    def events_per_batch(self) -> float:
        return self.events / self.committed if self.committed else 0.0

    @property
    def seconds_per_batch(self) -> float:
        return self.seconds / self.committed if self.committed else 0.0


def sink_batches(stack: LocalStack) -> SinkBatches:
    """The committed batches, events stored and store time of every sink of the stack so far."""
    committed = events = 0
    seconds = 0.0
    for index in range(len(stack.sinks)):
        found = samples(stack.sink_telemetry_url(index))
        committed += int(found.get(("bpom_sink_batches_total", (("result", "committed"),)), 0))
        events += int(found.get(("bpom_sink_events_stored_total", ()), 0))
        seconds += found.get(("bpom_sink_batch_seconds_sum", ()), 0.0)
    return SinkBatches(committed, events, seconds)
