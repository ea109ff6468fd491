"""The engine's pods follow docs/engine-runtime.md: commands, ports, probes, env, config, security."""

from __future__ import annotations

import pytest
import yaml

from testkit.chart.render import find, get, render_chart

pytestmark = pytest.mark.helm

CONFIG_PATH = "/etc/bp-openmeter/config.yaml"


@pytest.fixture(scope="module")
def objects():
    return render_chart()


def pod_spec(objects, kind, name):
    return get(objects, kind, name)["spec"]["template"]["spec"]


def container(objects, kind, name):
    [c] = pod_spec(objects, kind, name)["containers"]
    return c


def env(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def config_of(objects):
    return yaml.safe_load(get(objects, "ConfigMap", "openmeter-config")["data"]["config.yaml"])


WORKLOADS = [
    ("Deployment", "openmeter-api", "api"),
    ("Deployment", "openmeter-sink", "sink"),
    ("Job", "openmeter-migrate-1", "migrate"),
]


@pytest.mark.parametrize("kind, name, command", WORKLOADS)
def test_each_component_runs_its_command_with_the_mounted_config(objects, kind, name, command):
    c = container(objects, kind, name)
    assert c["args"] == [command, "--config", CONFIG_PATH]
    assert env(c)["BPOM_CONFIG"] == CONFIG_PATH
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/bp-openmeter"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(objects, kind, name)["volumes"]}
    assert volumes[mounts["/etc/bp-openmeter"]["name"]]["configMap"]["name"] == "openmeter-config"
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


@pytest.mark.parametrize("kind, name, command", WORKLOADS)
def test_pods_carry_the_contract_labels(objects, kind, name, command):
    labels = get(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
    assert {
        k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
    } == {
        "app.kubernetes.io/name": "bp-openmeter",
        "app.kubernetes.io/instance": "openmeter",
        "app.kubernetes.io/component": command,
    }


@pytest.mark.parametrize("kind, name, command", WORKLOADS)
def test_pods_are_locked_down(objects, kind, name, command):
    spec = pod_spec(objects, kind, name)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects, kind, name)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("kind, name, command", WORKLOADS)
def test_database_url_comes_from_the_cnpg_app_secret(objects, kind, name, command):
    assert env(container(objects, kind, name))["BPOM_POSTGRES_URL"] == {
        "secretKeyRef": {"name": "openmeter-pg-app", "key": "uri"}
    }


def test_ports_and_config_addresses_agree(objects):
    config = config_of(objects)
    api_ports = {p["name"]: p["containerPort"] for p in container(objects, "Deployment", "openmeter-api")["ports"]}
    sink_ports = {p["name"]: p["containerPort"] for p in container(objects, "Deployment", "openmeter-sink")["ports"]}
    assert api_ports == {"http": 8888, "telemetry": 10000}
    assert sink_ports == {"telemetry": 10000}
    assert config["api"]["address"] == "0.0.0.0:8888"
    assert config["telemetry"]["address"] == "0.0.0.0:10000"


def test_ports_are_values():
    objects = render_chart({"api": {"port": 9999, "service": {"port": 8080}}, "telemetry": {"port": 9100}})
    config = config_of(objects)
    assert config["api"]["address"] == "0.0.0.0:9999"
    assert config["telemetry"]["address"] == "0.0.0.0:9100"
    ports = {p["name"]: p["containerPort"] for p in container(objects, "Deployment", "openmeter-api")["ports"]}
    assert ports == {"http": 9999, "telemetry": 9100}
    service = {p["name"]: p for p in get(objects, "Service", "openmeter-api")["spec"]["ports"]}
    assert service["http"]["port"] == 8080 and service["http"]["targetPort"] == "http"


@pytest.mark.parametrize("name", ["openmeter-api", "openmeter-sink"])
def test_probes_hit_the_health_endpoints_on_the_telemetry_port(objects, name):
    c = container(objects, "Deployment", name)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "telemetry"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz/live", "port": "telemetry"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "telemetry"}


def test_migrate_job_has_no_probes_and_does_not_restart_in_place(objects):
    job = get(objects, "Job", "openmeter-migrate-1")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "readinessProbe" not in container(objects, "Job", "openmeter-migrate-1")


def test_services_select_their_component_and_expose_telemetry(objects):
    api = get(objects, "Service", "openmeter-api")
    api_telemetry = get(objects, "Service", "openmeter-api-telemetry")
    sink = get(objects, "Service", "openmeter-sink")
    assert api["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert api_telemetry["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert sink["spec"]["selector"]["app.kubernetes.io/component"] == "sink"
    assert sink["spec"]["clusterIP"] == "None"
    assert {p["targetPort"] for p in api["spec"]["ports"]} == {"http"}
    assert {p["targetPort"] for p in api_telemetry["spec"]["ports"]} == {"telemetry"}
    assert {p["targetPort"] for p in sink["spec"]["ports"]} == {"telemetry"}
    assert [s["metadata"]["labels"]["app.kubernetes.io/component"] for s in (api, api_telemetry, sink)] == [
        "api",
        "telemetry",
        "telemetry",
    ]


def test_pods_roll_when_the_config_changes():
    def checksum(objects):
        return get(objects, "Deployment", "openmeter-api")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum(render_chart()) != checksum(render_chart({"engine": {"logLevel": "debug"}}))


def test_image_tag_defaults_to_app_version_and_digest_wins(objects):
    assert container(objects, "Deployment", "openmeter-api")["image"] == "ghcr.io/openova-io/bp-openmeter-engine:0.1.0"
    digest = "sha256:" + "a" * 64
    pinned = render_chart({"image": {"repository": "bp-openmeter", "tag": "dev", "digest": digest}})
    assert container(pinned, "Deployment", "openmeter-sink")["image"] == f"bp-openmeter@{digest}"
    local = render_chart({"image": {"repository": "bp-openmeter", "tag": "e2e", "pullPolicy": "Never"}})
    c = container(local, "Deployment", "openmeter-api")
    assert (c["image"], c["imagePullPolicy"]) == ("bp-openmeter:e2e", "Never")


# ── the config file ───────────────────────────────────────────────────────────


def test_config_file_has_the_contract_sections(objects):
    config = config_of(objects)
    assert set(config) == {
        "namespace",
        "instance",
        "api",
        "telemetry",
        "postgres",
        "nats",
        "valkey",
        "sink",
        "retention",
        "logging",
        "meters",
        "maxMeters",
    }
    assert config["nats"]["url"] == "nats://nats.nats-system.svc.cluster.local:4222"
    assert config["valkey"]["url"] == "redis://valkey.valkey.svc.cluster.local:6379"
    assert "url" not in config["postgres"]  # a secret: env only
    # Bus names are left to the engine, which derives them from the release's instance (test_chart_tenancy).
    assert config["instance"].startswith("openmeter_openmeter_")
    assert "name" not in config["nats"]["stream"] and "durable" not in config["nats"]["consumer"]


def test_meters_declared_in_values_reach_the_config():
    meters = [
        {
            "slug": "tokens",
            "eventType": "llm.tokens",
            "aggregation": "SUM",
            "valueProperty": "$.tokens",
            "groupBy": {"model": "$.model"},
        }
    ]
    assert config_of(render_chart({"meters": meters}))["meters"] == meters


def test_secret_references_replace_plain_values():
    objects = render_chart(
        {
            "nats": {
                "urlSecret": {"name": "nats-conn", "key": "url"},
                "auth": {"secretName": "nats-creds", "userKey": "user", "passwordKey": "pass"},
            },
            "valkey": {"urlSecret": {"name": "vk", "key": "url"}, "passwordSecret": {"name": "vk-auth", "key": "pw"}},
            "api": {"auth": {"mode": "token", "tokensSecret": {"name": "tokens", "key": "list"}}},
            "postgres": {"connectionSecret": {"name": "db", "key": "fqdn-uri"}},
        }
    )
    e = env(container(objects, "Deployment", "openmeter-api"))
    assert e["BPOM_NATS_URL"] == {"secretKeyRef": {"name": "nats-conn", "key": "url"}}
    assert e["BPOM_NATS_USER"] == {"secretKeyRef": {"name": "nats-creds", "key": "user"}}
    assert e["BPOM_NATS_PASSWORD"] == {"secretKeyRef": {"name": "nats-creds", "key": "pass"}}
    assert "BPOM_NATS_TOKEN" not in e
    assert e["BPOM_VALKEY_URL"] == {"secretKeyRef": {"name": "vk", "key": "url"}}
    assert e["BPOM_VALKEY_PASSWORD"] == {"secretKeyRef": {"name": "vk-auth", "key": "pw"}}
    assert e["BPOM_API_TOKENS"] == {"secretKeyRef": {"name": "tokens", "key": "list"}}
    assert e["BPOM_POSTGRES_URL"] == {"secretKeyRef": {"name": "db", "key": "fqdn-uri"}}
    config = config_of(objects)
    assert "url" not in config["nats"] and "url" not in config["valkey"]
    assert config["api"]["auth"]["mode"] == "token"


def test_valkey_off_leaves_no_address():
    objects = render_chart({"valkey": {"enabled": False, "passwordSecret": {"name": "vk-auth"}}})
    assert "url" not in config_of(objects)["valkey"]
    assert "BPOM_VALKEY_PASSWORD" not in env(container(objects, "Deployment", "openmeter-api"))


def test_rendered_config_passes_the_engine_own_check(objects):
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    for values in ({}, {"meters": [{"slug": "calls", "eventType": "api.call", "aggregation": "COUNT"}]}):
        raw = config_of(render_chart(values))
        loaded = engine_config.build_config(raw)
        assert (loaded.api.port, loaded.telemetry.port) == (8888, 10000)


def test_the_chart_sink_defaults_are_the_engine_defaults(objects):
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    loaded = engine_config.build_config(config_of(objects)).sink
    assert loaded == engine_config.SinkConfig()
    tuned = engine_config.build_config(
        config_of(
            render_chart(
                {
                    "sink": {
                        "batchSize": 2000,
                        "concurrency": 4,
                        "storeSlots": 0,
                        "stallTimeout": "90s",
                        "sealingStallTimeout": "20m",
                    }
                }
            )
        )
    ).sink
    assert (
        tuned.batch_size,
        tuned.concurrency,
        tuned.store_slots,
        tuned.stall_timeout,
        tuned.sealing_stall_timeout,
    ) == (2000, 4, 0, 90.0, 1200.0)


def test_the_chart_valkey_recheck_interval_is_the_engine_default(objects):
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    loaded = engine_config.build_config(config_of(objects)).valkey
    assert loaded.recheck_interval == engine_config.ValkeyConfig.recheck_interval
    tuned = render_chart({"valkey": {"recheckInterval": "30s"}})
    assert engine_config.build_config(config_of(tuned)).valkey.recheck_interval == 30.0


def test_the_chart_meter_limit_is_the_engine_default(objects):
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    assert engine_config.build_config(config_of(objects)).max_meters == engine_config.Config.max_meters
    tuned = render_chart({"engine": {"maxMeters": 7}})
    assert engine_config.build_config(config_of(tuned)).max_meters == 7


def test_the_chart_event_time_range_is_the_engine_default(objects):
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    assert engine_config.build_config(config_of(objects)).api.event_time == engine_config.EventTimeConfig()
    tuned = render_chart({"api": {"eventTime": {"earliest": "2000-01-01T00:00:00+01:00", "maxAhead": "1h"}}})
    loaded = engine_config.build_config(config_of(tuned)).api.event_time
    assert (loaded.earliest.isoformat(), loaded.max_ahead) == ("1999-12-31T23:00:00+00:00", 3600.0)


# ── the migration step ───────────────────────────────────────────────────────


def test_migrate_in_init_containers_replaces_the_job():
    objects = render_chart({"migrate": {"mode": "initContainer"}})
    assert find(objects, "Job") == []
    for name in ("openmeter-api", "openmeter-sink"):
        [init] = pod_spec(objects, "Deployment", name)["initContainers"]
        assert init["args"][0] == "migrate"
        assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_migrate_job_is_named_per_revision_and_bounded(objects):
    job = get(objects, "Job", "openmeter-migrate-1")
    assert job["spec"]["backoffLimit"] == 6 and job["spec"]["activeDeadlineSeconds"] == 900
    assert "ttlSecondsAfterFinished" not in job["spec"]
    kept = get(render_chart({"migrate": {"ttlSecondsAfterFinished": 0}}), "Job", "openmeter-migrate-1")
    assert kept["spec"]["ttlSecondsAfterFinished"] == 0
