"""Fixture events and meters, scoped to one test run, encoded with the CloudEvents SDK.

The engine serves one OpenMeter namespace, so runs (and tests) that share a target
keep apart by rewriting what identifies their data: every subject gets the run's
prefix and every source the run's suffix, so neither queries (always filtered by
subject) nor deduplication keys ((source, id)) can meet another run's events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

try:  # cloudevents 2.x keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.conversion import to_json, to_structured
    from cloudevents.v1.http import CloudEvent
except ImportError:  # cloudevents 1.x
    from cloudevents.conversion import to_json, to_structured  # type: ignore[no-redef]
    from cloudevents.http import CloudEvent  # type: ignore[no-redef]

from testkit.paths import FIXTURES
from testkit.runid import RunId
from testkit.usage.reference import Event, Meter

EVENTS_FILE = FIXTURES / "events" / "fingate.json"
METERS_FILE = FIXTURES / "meters.yaml"
_ATTRIBUTES = ("id", "source", "type", "subject", "time", "specversion", "datacontenttype")


def load_events(path: Path = EVENTS_FILE) -> list[dict[str, Any]]:
    events = json.loads(path.read_text())
    if not isinstance(events, list):
        raise ValueError(f"{path}: expected a JSON array of CloudEvents")
    return events


def load_meters(path: Path = METERS_FILE) -> list[dict[str, Any]]:
    meters = yaml.safe_load(path.read_text())
    if not isinstance(meters, list):
        raise ValueError(f"{path}: expected a YAML list of meters")
    return meters


def reference_meter(meter: Mapping[str, Any]) -> Meter:
    return Meter.from_api(meter)


@dataclass(frozen=True)
class RunScope:
    """Rewrites fixture events so that they belong to one run (or one test of a run)."""

    run: RunId
    label: str = ""

    @property
    def prefix(self) -> str:
        return f"{self.run.value}-{self.label}-" if self.label else f"{self.run.value}-"

    def subject(self, subject: str) -> str:
        return f"{self.prefix}{subject}"

    def source(self, source: str) -> str:
        return f"{source}/{self.prefix.rstrip('-')}"

    def event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        scoped = dict(event)
        scoped["subject"] = self.subject(event["subject"])
        scoped["source"] = self.source(event["source"])
        return scoped

    def events(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.event(e) for e in events]

    def subjects(self, events: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
        """The scoped subjects of fixture (unscoped) events, sorted."""
        return tuple(sorted({self.subject(e["subject"]) for e in events}))


def cloudevent(event: Mapping[str, Any]) -> CloudEvent:
    attributes = {k: event[k] for k in _ATTRIBUTES if k in event}
    attributes.setdefault("specversion", "1.0")
    return CloudEvent(attributes, event.get("data"))


def structured(event: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """One event in structured mode: (headers, body) with content-type application/cloudevents+json."""
    headers, body = to_structured(cloudevent(event))
    return dict(headers), body if isinstance(body, bytes) else body.encode()


def batch_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    """A JSON array of structured events (application/cloudevents-batch+json)."""
    parts = [to_json(cloudevent(e)) for e in events]
    return b"[" + b",".join(p if isinstance(p, bytes) else p.encode() for p in parts) + b"]"


def reference_events(events: Iterable[Mapping[str, Any]]) -> list[Event]:
    return [Event.from_cloudevent(e) for e in events]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
