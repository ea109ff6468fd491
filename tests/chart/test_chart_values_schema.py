"""values.schema.json: a wrong value fails at helm install/template, with a message naming the key."""

from __future__ import annotations

import json

import jsonschema
import pytest

from testkit.chart.render import CHART_DIR, RenderError, chart_values, names_key, render_chart

pytestmark = pytest.mark.helm

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


@pytest.mark.parametrize(
    "values, key",
    [
        ({"api": {"port": "http"}}, "api.port"),
        ({"api": {"port": 70000}}, "api.port"),
        ({"telemetry": {"port": 0}}, "telemetry.port"),
        ({"catalystBlueprint": {"backend": {"kind": "mysql"}}}, "catalystBlueprint.backend.kind"),
        ({"hpa": {"enabled": "yes"}}, "hpa.enabled"),
        (
            {"networkPolicy": {"egress": {"nats": {"ports": [{"port": 99999}]}}}},
            "networkPolicy.egress.nats.ports.0.port",
        ),
        (
            {"networkPolicy": {"egress": {"dns": {"ports": [{"port": 53, "protocol": "ICMP"}]}}}},
            "networkPolicy.egress.dns.ports.0.protocol",
        ),
        ({"sink": {"maxWait": "soon"}}, "sink.maxWait"),
        ({"migrate": {"mode": "hook"}}, "migrate.mode"),
        ({"meters": [{"slug": "Bad Slug", "eventType": "x", "aggregation": "COUNT"}]}, "meters.0.slug"),
        ({"meters": [{"slug": "ok", "eventType": "x", "aggregation": "MEDIAN"}]}, "meters.0.aggregation"),
        ({"postgres": {"cluster": {"create": False}}}, "postgres.cluster.name"),
        ({"api": {"auth": {"mode": "token"}}}, "api.auth.tokensSecret.name"),
        ({"catalystBlueprint": {"eventBus": {"kind": "kafka"}}}, "catalystBlueprint.eventBus.kind"),
        ({"nats": {"url": "http://nats:4222"}}, "nats.url"),
        ({"image": {"digest": "latest"}}, "image.digest"),
        ({"api": {"eventTime": {"earliest": "1970-01-01"}}}, "api.eventTime.earliest"),
        ({"api": {"eventTime": {"maxAhead": "31d"}}}, "api.eventTime.maxAhead"),
    ],
)
def test_helm_rejects_a_wrong_value_naming_its_key(values, key):
    with pytest.raises(RenderError) as failure:
        render_chart(values)
    assert names_key(str(failure.value), key), str(failure.value)


def test_unknown_keys_are_rejected():
    with pytest.raises(RenderError, match="apii"):
        render_chart({"apii": {"port": 8888}})
    with pytest.raises(RenderError, match="replica"):
        render_chart({"api": {"replica": 2}})


# The clickhouse profile cannot be rendered without its vendored dependency, so
# its cross-field rules are checked here with the same schema helm applies.


def schema_errors(overrides):
    validator = jsonschema.Draft7Validator(SCHEMA)
    return sorted(
        ".".join(map(str, e.absolute_path)) or e.message
        for e in validator.iter_errors(chart_values(CHART_DIR, overrides))
    )


def test_default_values_satisfy_the_schema():
    assert schema_errors({}) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"catalystBlueprint": {"backend": {"kind": "clickhouse"}}, "openmeter": {"enabled": True}},
        {
            "catalystBlueprint": {"backend": {"kind": "clickhouse"}, "eventBus": {"kind": "kafka"}},
            "openmeter": {"enabled": True},
        },
    ],
)
def test_clickhouse_profile_is_valid_with_its_dependency_on(overrides):
    assert schema_errors(overrides) == []


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"catalystBlueprint": {"backend": {"kind": "clickhouse"}}}, "openmeter.enabled"),
        ({"openmeter": {"enabled": True}}, "openmeter.enabled"),
        ({"openmeter": {"enabled": "true"}}, "openmeter.enabled"),
        (
            {
                "catalystBlueprint": {"backend": {"kind": "clickhouse"}},
                "openmeter": {"enabled": True},
                "networkPolicy": {"enabled": True},
            },
            "networkPolicy.enabled",
        ),
        (
            {
                "catalystBlueprint": {"backend": {"kind": "clickhouse"}},
                "openmeter": {"enabled": True},
                "serviceMonitor": {"enabled": True},
            },
            "serviceMonitor.enabled",
        ),
        (
            {
                "catalystBlueprint": {"backend": {"kind": "clickhouse"}},
                "openmeter": {"enabled": True},
                "hpa": {"enabled": True},
            },
            "hpa.enabled",
        ),
    ],
)
def test_cross_field_rules(overrides, key):
    assert key in schema_errors(overrides)
