"""Every release is alone on shared servers: its JetStream stream, subject prefix, durable
consumer and Valkey key prefix derive from the release, deterministically, unless set."""

from __future__ import annotations

import re

import pytest
import yaml

from testkit.chart.render import get, render_chart

pytestmark = pytest.mark.helm

engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")

# NATS: stream and consumer names may not hold whitespace, '.', '*', '>', or path separators;
# a subject token may not hold whitespace, '.', '*' or '>'.
NATS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def bus_names(release: str, namespace: str, values: dict | None = None) -> dict[str, str]:
    """What the engine of this release uses on the shared servers (read by the engine's own parser)."""
    # validate=False: a dotted release name renders Service names Kubernetes refuses, whatever this test checks.
    objects = render_chart(values or {}, release=release, namespace=namespace, validate=False)
    fullname = release if "openmeter" in release else f"{release}-openmeter"
    raw = yaml.safe_load(get(objects, "ConfigMap", f"{fullname[:55].rstrip('-')}-config")["data"]["config.yaml"])
    cfg = engine_config.build_config(raw)
    return {
        "stream": cfg.nats.stream.name,
        "subjects": cfg.nats.stream.subject_prefix,
        "durable": cfg.nats.consumer.durable,
        "valkey": getattr(cfg.valkey, "key_prefix", ""),
    }


PAIRS = [
    # the same release name in two namespaces: what every team installing "openmeter" does
    (("openmeter", "team-a"), ("openmeter", "team-b")),
    # parts that join alike with a dash
    (("c", "a-b"), ("b-c", "a")),
    # long names that agree on their first characters
    (
        ("metering-for-the-whole-platform-1", "tenants-of-the-platform-x"),
        ("metering-for-the-whole-platform-2", "tenants-of-the-platform-x"),
    ),
    (("om", "tenants-of-the-platform-namespace-one"), ("om", "tenants-of-the-platform-namespace-two")),
    # a dot is allowed in a release name, not in a stream name or subject token
    (("metering.v2", "billing"), ("metering-v2", "billing")),
]


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a[1]}/{a[0]}~{b[1]}/{b[0]}" for a, b in PAIRS])
def test_two_releases_share_no_name_on_the_servers(first, second):
    one, other = bus_names(*first), bus_names(*second)
    for what in one:
        assert one[what] != other[what], f"{what}: both releases use {one[what]!r}"


@pytest.mark.parametrize("release, namespace", [pair for pairs in PAIRS for pair in pairs])
def test_derived_names_are_valid_and_deterministic(release, namespace):
    names = bus_names(release, namespace)
    assert NATS_NAME.match(names["stream"]) and len(names["stream"]) <= 64, names
    assert NATS_NAME.match(names["durable"]) and len(names["durable"]) <= 64, names
    assert SUBJECT.match(names["subjects"]), names
    assert names["valkey"] and " " not in names["valkey"], names
    assert bus_names(release, namespace) == names


def test_values_override_each_derived_name():
    names = bus_names(
        "openmeter",
        "team-a",
        {
            "nats": {
                "stream": {"name": "OPENMETER_EVENTS", "subjectPrefix": "openmeter.events"},
                "consumer": {"durable": "bp-openmeter-sink"},
            },
            "valkey": {"keyPrefix": "om:"},
        },
    )
    assert names == {
        "stream": "OPENMETER_EVENTS",
        "subjects": "openmeter.events",
        "durable": "bp-openmeter-sink",
        "valkey": "om:",
    }


def test_engine_instance_value_names_the_release_on_the_servers():
    one = bus_names("openmeter", "team-a", {"engine": {"instance": "billing"}})
    other = bus_names("openmeter", "team-b", {"engine": {"instance": "billing"}})
    assert one == other, "the same instance value is the same deployment on the servers"
    assert all("billing" in name for name in one.values()), one
