"""The clickhouse profile (chart/ci/clickhouse-values.yaml) against the upstream chart it configures.

Everywhere: every key the profile (and chart/values.yaml) sets under `openmeter` is one
the upstream chart at the pinned version has (testkit/chart/upstream/: its values.yaml
copied from the release tag, and the configuration keys its `config` value takes);
upstream gets a database; duplicates are dropped across sink batches, on the
platform's Valkey, and never by both dedupe layers on one Redis database.

Where the upstream chart's OCI registry is reachable (`nox -s chart-clickhouse`
vendors it first): the profile rendered with the real dependency, every object
validated (built-in kinds against the Kubernetes schemas, custom resources against
the CRDs the dependency ships), and the config.yaml upstream reads checked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterator, Mapping

import jsonschema
import pytest
import yaml

from e2e.lib import chart as chart_lib
from testkit.chart.render import chart_values, dependencies, get, helm_lint, helm_template, is_vendored
from testkit.chart.schemas import KUBE_VERSION, SchemaError, validate_object
from testkit.paths import CHART_DIR
from testkit.platform import platform

PLATFORM = platform()
BP = PLATFORM.blueprint
UPSTREAM = PLATFORM.upstream_chart
UPSTREAM_VALUES = yaml.safe_load(UPSTREAM.values_file.read_text())
CONFIG_KEYS: dict[str, Any] = yaml.safe_load(UPSTREAM.config_keys_file.read_text())["keys"]
# Upstream's dependencies: below these keys the values are the Bitnami/Altinity charts'.
SUBCHARTS = {"kafka", "redis", "postgresql", "altinity-clickhouse-operator"}
TYPES = {"boolean": bool, "integer": int, "string": str, "duration": str}


def profile() -> dict[str, Any]:
    return yaml.safe_load(BP.profile("clickhouse").read_text())


def leaf_paths(node: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def config_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for path, value in leaf_paths(config):
        key = ".".join(path)
        if key not in CONFIG_KEYS:
            problems.append(f"openmeter.config.{key}: not a configuration key upstream reads")
            continue
        kind = CONFIG_KEYS[key]
        if isinstance(kind, list) and str(value) not in [str(k) for k in kind]:
            problems.append(f"openmeter.config.{key}: {value!r} is not one of {kind}")
        elif isinstance(kind, str) and not isinstance(value, TYPES[kind]):
            problems.append(f"openmeter.config.{key}: {value!r} is not a {kind}")
    return problems


def upstream_problems(values: Mapping[str, Any]) -> list[str]:
    """Keys under `openmeter` that the upstream chart at the pinned version does not have."""
    problems = []
    openmeter = values.get("openmeter") or {}
    problems += config_problems(openmeter.get("config") or {})
    for path, _ in leaf_paths({k: v for k, v in openmeter.items() if k != "config"}):
        if path == ("enabled",):
            continue  # the umbrella's condition on the dependency (chart/Chart.yaml), not an upstream value
        checked = path[:1] if path[0] in SUBCHARTS and path[1:] != ("enabled",) else path
        node: Any = UPSTREAM_VALUES
        for depth, part in enumerate(checked):
            if not isinstance(node, Mapping) or part not in node:
                problems.append(
                    f"openmeter.{'.'.join(path)}: upstream's values have no {'.'.join(checked[: depth + 1])}"
                )
                break
            node = node[part]
    return problems


def dedupe_problems(config: Mapping[str, Any]) -> list[str]:
    """Why upstream would count a duplicate twice, or drop every event."""
    sink = (config.get("sink") or {}).get("dedupe") or {}
    api = config.get("dedupe") or {}
    problems = []
    if not (sink.get("enabled") and sink.get("driver") == "redis"):
        problems.append("sink.dedupe is not the redis driver: duplicates in later batches count again")
    where = lambda d: ((d.get("config") or {}).get("address"), (d.get("config") or {}).get("database", 0))  # noqa: E731
    if api.get("enabled") and api.get("driver") == "redis" and where(api) == where(sink):
        problems.append(
            f"dedupe and sink.dedupe on one Redis database {where(sink)}: the API's keys make the sink drop every event"
        )
    return problems


def valkey_address() -> str:
    valkey = PLATFORM.chart("valkey")  # its Service is named after the release, which is the chart's name here
    return f"{valkey.name}.{valkey.namespace}.svc.cluster.local:6379"


# --- everywhere -------------------------------------------------------------------------------------


def test_the_upstream_description_is_the_pinned_release():
    assert hashlib.sha256(UPSTREAM.values_file.read_bytes()).hexdigest() == UPSTREAM.sha256, (
        f"{UPSTREAM.values_file.name} is not the file recorded from {UPSTREAM.source}"
    )
    [dependency] = dependencies()
    assert UPSTREAM.tag.removeprefix("v") == dependency["version"], (
        f"the upstream description is of {UPSTREAM.tag}, chart/Chart.yaml pins {dependency['version']}"
    )


@pytest.mark.parametrize("source", ["profile", "chart/values.yaml"])
def test_every_openmeter_key_is_one_the_upstream_chart_has(source):
    values = profile() if source == "profile" else yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert upstream_problems(values) == []


def test_a_key_the_upstream_chart_lacks_is_caught():
    problems = upstream_problems(
        {"openmeter": {"postgres": {"enabled": True}, "config": {"sink": {"dedup": {"enabled": True}}}}}
    )
    assert "openmeter.postgres.enabled: upstream's values have no postgres" in problems
    assert "openmeter.config.sink.dedup.enabled: not a configuration key upstream reads" in problems
    assert config_problems({"sink": {"dedupe": {"driver": "valkey"}}}) == [
        "openmeter.config.sink.dedupe.driver: 'valkey' is not one of ['memory', 'redis']"
    ]


def test_upstream_gets_a_database():
    openmeter = chart_values(overrides=profile())["openmeter"]
    assert openmeter["postgresql"]["enabled"] or (openmeter["config"].get("postgres") or {}).get("url"), (
        "upstream keeps meters and namespaces in PostgreSQL: every workload would start without a database URL"
    )


def test_duplicates_are_dropped_across_batches_on_the_platform_valkey():
    config = chart_values(overrides=profile())["openmeter"]["config"]
    assert dedupe_problems(config) == []
    assert config["sink"]["dedupe"]["config"]["address"] == valkey_address()


def test_dedupe_on_both_layers_of_one_redis_database_is_caught():
    sink = {"enabled": True, "driver": "redis", "config": {"address": "valkey:6379", "database": 1}}
    both = {"sink": {"dedupe": sink}, "dedupe": sink}
    assert "drop every event" in " ".join(dedupe_problems(both))
    apart = {"sink": {"dedupe": sink}, "dedupe": {**sink, "config": {"address": "valkey:6379", "database": 2}}}
    assert dedupe_problems(apart) == []
    assert "count again" in " ".join(dedupe_problems({}))


# --- where the upstream chart can be fetched (nox -s chart-clickhouse) --------------------------------


def require_the_upstream_chart() -> None:
    [dependency] = dependencies()
    if is_vendored(dependency, CHART_DIR):
        return
    message = (
        f"the upstream {dependency['name']} chart {dependency['version']} is not vendored in {CHART_DIR / 'charts'}: "
        f"`nox -s chart-clickhouse` fetches it from {dependency['repository']}"
    )
    if os.environ.get("BPOM_UPSTREAM_CHART") == "required":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.helm
def test_the_profile_renders_valid_objects_with_the_upstream_chart():
    require_the_upstream_chart()
    values = chart_lib.tier_values(BP, "clickhouse", BP.image_repository, "e2e-0123456789ab")
    text = helm_template(values, namespace=BP.namespace, release=BP.release, include_crds=True)
    docs = [d for d in yaml.safe_load_all(text) if d]
    crds = {
        (d["spec"]["group"], d["spec"]["names"]["kind"]): d for d in docs if d["kind"] == "CustomResourceDefinition"
    }
    errors = []
    for obj in docs:
        group = obj["apiVersion"].rpartition("/")[0]
        crd = crds.get((group, obj["kind"]))
        try:
            if crd is None:
                validate_object(obj, KUBE_VERSION)
                continue
            version = obj["apiVersion"].rpartition("/")[2]
            schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
            jsonschema.validate(obj, schema)
        except (SchemaError, jsonschema.ValidationError, StopIteration) as exc:
            errors.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {str(exc).splitlines()[0]}")
    assert not errors, "\n".join(errors)
    config = yaml.safe_load(get(docs, "ConfigMap", BP.release)["data"]["config.yaml"])
    assert dedupe_problems(config) == [] and config["sink"]["dedupe"]["config"]["address"] == valkey_address()
    assert config["postgres"]["url"].startswith("postgres://") and config["sink"]["kafka"]["brokers"]
    assert config["aggregation"]["clickhouse"]["address"]


@pytest.mark.helm
def test_the_profile_passes_helm_lint_with_the_upstream_chart():
    require_the_upstream_chart()
    proc = helm_lint(chart_lib.tier_values(BP, "clickhouse", BP.image_repository, "e2e-0123456789ab"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
