"""blueprint.yaml, Chart.yaml and values.yaml agree: versions, upstream pin, configSchema."""

from __future__ import annotations

import copy
import json
import tomllib

import pytest
import yaml

from testkit.chart.render import CHART_DIR
from testkit.paths import REPO_ROOT


def load(path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def documents():
    return {
        "chart": load(CHART_DIR / "Chart.yaml"),
        "values": load(CHART_DIR / "values.yaml"),
        "blueprint": load(REPO_ROOT / "blueprint.yaml"),
    }


def drift(chart, values, blueprint):
    """Every disagreement between the three documents, as readable lines."""
    problems = []
    if blueprint["spec"]["version"] != chart["version"]:
        problems.append(
            f"blueprint.yaml spec.version {blueprint['spec']['version']} != Chart.yaml version {chart['version']}"
        )
    [dependency] = [d for d in chart.get("dependencies", []) if d["name"] == "openmeter"]
    pins = {
        "Chart.yaml dependencies": (dependency["name"], dependency["version"], dependency["repository"]),
        "values.yaml catalystBlueprint.upstream": tuple(
            values["catalystBlueprint"]["upstream"][k] for k in ("chart", "version", "repo")
        ),
        "blueprint.yaml spec.upstream": tuple(blueprint["spec"]["upstream"][k] for k in ("chart", "version", "repo")),
    }
    if len(set(pins.values())) != 1:
        problems.append("upstream pin differs: " + "; ".join(f"{k} = {v}" for k, v in pins.items()))
    return problems


def test_versions_and_upstream_pin_move_in_lockstep(documents):
    assert drift(**documents) == []


@pytest.mark.parametrize(
    "document, path, value",
    [
        ("blueprint", ("spec", "version"), "9.9.9"),
        ("chart", ("version",), "9.9.9"),
        ("values", ("catalystBlueprint", "upstream", "version"), "1.0.0-beta.1"),
        ("blueprint", ("spec", "upstream", "version"), "1.0.0-beta.1"),
        ("blueprint", ("spec", "upstream", "repo"), "oci://example.com/charts"),
    ],
)
def test_drift_is_caught(documents, document, path, value):
    drifted = copy.deepcopy(documents)
    node = drifted[document]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert drift(**drifted)


def test_chart_dependency_pin_drift_is_caught(documents):
    drifted = copy.deepcopy(documents)
    drifted["chart"]["dependencies"][0]["version"] = "1.0.0-beta.1"
    assert drift(**drifted)


def test_app_version_is_the_engine_version(documents):
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert documents["chart"]["appVersion"] == project["version"]


def test_blueprint_identity(documents):
    blueprint = documents["blueprint"]
    assert (blueprint["apiVersion"], blueprint["kind"]) == ("catalyst.openova.io/v1alpha1", "Blueprint")
    assert blueprint["metadata"]["name"] == documents["chart"]["name"] == "bp-openmeter"
    assert blueprint["spec"]["manifests"]["chart"] == "./chart"
    assert {d["blueprint"] for d in blueprint["spec"]["depends"]} == {
        "bp-cnpg",
        "bp-nats-jetstream",
        "bp-valkey",
        "bp-cert-manager",
    }


def config_fields(schema, prefix=""):
    """(console path, field schema) for every leaf of a configSchema."""
    for name, field in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if field.get("type") == "object":
            yield from config_fields(field, path + ".")
        else:
            yield path, field


def lookup(document, dotted):
    node = document
    for part in dotted.split("."):
        node = node[part]
    return node


def test_config_schema_maps_onto_chart_values(documents):
    values_schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    fields = dict(config_fields(documents["blueprint"]["spec"]["configSchema"]))
    assert set(fields) == {
        "backend.kind",
        "eventBus.kind",
        "replicas",
        "serviceMonitor.enabled",
        "networkPolicy.enabled",
        "httpRoute.enabled",
        "ingress.enabled",
        "certificate.enabled",
        "certificate.clusterIssuer",
        "export.enabled",
        "export.target",
    }
    for path, field in fields.items():
        values_path = field["x-values-path"]
        assert field["default"] == lookup(documents["values"], values_path), path
        value_schema = lookup(values_schema, "properties." + ".properties.".join(values_path.split(".")))
        if "enum" in field:
            assert field["enum"] == value_schema["enum"], path
