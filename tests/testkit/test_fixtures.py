"""The committed fixtures: reproducible, and never asking what the spec leaves open."""

from testkit.platform import load_platform
from testkit.usage import fixturegen
from testkit.usage.cases import all_cases
from testkit.usage.events import EVENTS_FILE, load_events, load_meters, reference_events
from testkit.usage.reference import Meter, expected_usage, unique_events


def test_events_file_is_the_generator_output():
    assert EVENTS_FILE.read_text() == fixturegen.render(), (
        "regenerate: python -m testkit.usage.fixturegen > fixtures/events/fingate.json"
    )


def test_fixture_exercises_what_it_claims():
    events = load_events()
    refs = reference_events(events)
    assert len(refs) - len(unique_events(refs)) >= 5, "duplicates"
    times = {e.time for e in refs}
    for boundary in fixturegen.BOUNDARIES:
        assert boundary in times, f"an event exactly on {boundary}"
    stamps = [e["time"] for e in events]
    assert any(s.endswith("+04:00") for s in stamps) and any(s.endswith("+05:30") for s in stamps)
    latencies = [e["data"].get("latency_ms", "missing") for e in events if e["type"] == "fingate.api.call"]
    assert {"missing", None, "n/a", "NaN"} <= set(latencies)
    assert any(isinstance(v, str) and v.isdigit() for v in latencies), "numeric strings"
    psus = {e["data"]["psu_id"] for e in events if e["type"] == "fingate.api.call"}
    assert 1042 in psus and "1042" in psus


def test_every_case_is_defined_and_selects_data():
    meters = load_meters()
    refs = reference_events(load_events())
    subjects = tuple(sorted({e.subject for e in refs}))
    by_slug = {m["slug"]: Meter.from_api(m) for m in meters}
    cases = all_cases(meters)
    assert len({c.id for c in cases}) == len(cases), "case ids are unique"
    for case in cases:
        expected = expected_usage(by_slug[case.slug], refs, case.with_subjects(subjects))  # raises if undefined
        assert expected, case.id


def test_meters_cover_every_aggregation_and_fingate():
    meters = load_meters()
    assert {m["aggregation"] for m in meters} == {"SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"}
    slugs = {m["slug"]: m for m in meters}
    assert slugs["api_calls"]["aggregation"] == "COUNT" and slugs["api_latency"]["aggregation"] == "SUM"


def test_platform_pins_every_version():
    platform = load_platform()
    assert platform.kind_version.startswith("v")
    for image in platform.node_images.values():
        assert "@sha256:" in image, f"node image {image} pinned by digest"
    assert len(platform.node_images) >= 2, "two Kubernetes versions for the nightly matrix"
    for chart in platform.charts:
        assert chart.version and chart.repo.startswith("https://"), chart.name
    names = [c.name for c in platform.charts]
    assert names.index("cert-manager") < names.index("cnpg")
    assert {"cnpg", "nats", "valkey"} <= set(names)
    nats = next(c for c in platform.charts if c.name == "nats")
    assert nats.values["config"]["jetstream"]["enabled"] is True
    for backend in ("cnpg", "clickhouse"):
        assert platform.blueprint.profile(backend).is_file()
