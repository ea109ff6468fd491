"""Durability settings the chart renders: synchronous replication with more than one
PostgreSQL instance, backups through CloudNativePG's Barman Cloud plugin, and the
engine's capped reconnection pauses.

The Cluster is validated against the CloudNativePG 1.30 CRD vendored in
testkit/chart/crds (render_chart does it). No CRD of ScheduledBackup (CloudNativePG)
or ObjectStore (plugin-barman-cloud) is vendored: their fields are checked here
against the API of those releases (ScheduledBackup: cluster.name, a six-field
schedule, method plugin, pluginConfiguration.name; ObjectStore barmancloud.cnpg.io/v1:
spec.configuration as the in-tree barmanObjectStore, spec.retentionPolicy).
"""

from __future__ import annotations

import pytest
import yaml

from bp_openmeter import config as engine_config
from testkit.chart.render import RenderError, find, get, names_key, render_chart
from testkit.chart.schemas import validate_object

pytestmark = pytest.mark.helm

CLUSTER = "openmeter-pg"
PLUGIN = "barman-cloud.cloudnative-pg.io"


def cluster_spec(values=None) -> dict:
    return get(render_chart(values), "Cluster", CLUSTER)["spec"]


def instances(n: int, **synchronous) -> dict:
    values = {"postgres": {"cluster": {"instances": n}}}
    if synchronous:
        values["postgres"]["cluster"]["synchronous"] = synchronous
    return values


def test_one_instance_has_no_standby_to_wait_for():
    assert "synchronous" not in cluster_spec().get("postgresql", {})


@pytest.mark.parametrize("n", [2, 3])
def test_more_than_one_instance_replicates_synchronously_by_default(n):
    spec = cluster_spec(instances(n))
    assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1, "dataDurability": "required"}


def test_synchronous_replication_can_be_turned_off():
    assert "postgresql" not in cluster_spec(instances(3, enabled=False))


def test_synchronous_settings_pass_through_next_to_parameters():
    values = instances(3, method="first", number=2, dataDurability="preferred")
    values["postgres"]["cluster"]["parameters"] = {"max_connections": 300}
    postgresql = cluster_spec(values)["postgresql"]
    assert postgresql["synchronous"] == {"method": "first", "number": 2, "dataDurability": "preferred"}
    assert postgresql["parameters"] == {"max_connections": "300"}


def test_a_number_of_standbys_the_operator_would_refuse_fails_the_render():
    with pytest.raises(RenderError) as refused:
        render_chart(instances(2, number=2))
    assert "postgres.cluster.synchronous.number" in str(refused.value), refused.value


@pytest.mark.parametrize(
    "synchronous, key", [({"method": "all"}, "method"), ({"dataDurability": "strict"}, "dataDurability")]
)
def test_values_schema_refuses_unknown_synchronous_settings(synchronous, key):
    with pytest.raises(RenderError) as refused:
        render_chart(instances(2, **synchronous))
    assert names_key(str(refused.value), f"postgres.cluster.synchronous.{key}"), refused.value


# --- backups -------------------------------------------------------------------------

STORE_CONFIGURATION = {
    "destinationPath": "s3://backups/openmeter",
    "endpointURL": "https://s3.example.internal",
    "s3Credentials": {
        "accessKeyId": {"name": "backup-s3", "key": "ACCESS_KEY_ID"},
        "secretAccessKey": {"name": "backup-s3", "key": "ACCESS_SECRET_KEY"},
    },
    "wal": {"compression": "gzip"},
}


def with_backup(**backup) -> dict:
    return {"postgres": {"cluster": {"backup": {"enabled": True, **backup}}}}


def backup_objects(values) -> list[dict]:
    objects = render_chart(values, validate=False)
    for obj in objects:
        if obj["kind"] not in ("ScheduledBackup", "ObjectStore"):
            validate_object(obj)  # the Cluster against the vendored CRD, the rest against Kubernetes
    return objects


def test_backups_are_off_by_default():
    objects = render_chart()
    assert not find(objects, "ScheduledBackup") and not find(objects, "ObjectStore")
    assert "plugins" not in get(objects, "Cluster", CLUSTER)["spec"]


def test_backups_archive_wal_to_the_object_store_and_schedule_base_backups():
    objects = backup_objects(with_backup(objectStore={"configuration": STORE_CONFIGURATION}))
    store = get(objects, "ObjectStore", f"{CLUSTER}-backup")
    assert store["apiVersion"] == "barmancloud.cnpg.io/v1"
    assert store["spec"] == {"configuration": STORE_CONFIGURATION, "retentionPolicy": "30d"}
    assert get(objects, "Cluster", CLUSTER)["spec"]["plugins"] == [
        {"name": PLUGIN, "isWALArchiver": True, "parameters": {"barmanObjectName": f"{CLUSTER}-backup"}}
    ]
    scheduled = get(objects, "ScheduledBackup", f"{CLUSTER}-backup")
    assert scheduled["apiVersion"] == "postgresql.cnpg.io/v1"
    assert scheduled["spec"] == {
        "cluster": {"name": CLUSTER},
        "schedule": "0 0 0 * * *",
        "method": "plugin",
        "pluginConfiguration": {"name": PLUGIN},
        "immediate": True,
        "backupOwnerReference": "self",
    }
    assert len(scheduled["spec"]["schedule"].split()) == 6, "CloudNativePG's cron has a seconds field"


def test_an_existing_object_store_is_referred_to_not_rendered():
    objects = backup_objects(with_backup(objectStore={"name": "shared-store", "create": False}, target="primary"))
    assert not find(objects, "ObjectStore")
    plugin = get(objects, "Cluster", CLUSTER)["spec"]["plugins"][0]
    assert plugin["parameters"] == {"barmanObjectName": "shared-store"}
    assert get(objects, "ScheduledBackup", f"{CLUSTER}-backup")["spec"]["target"] == "primary"


def test_an_object_store_to_create_needs_its_destination():
    with pytest.raises(RenderError) as refused:
        render_chart(with_backup(objectStore={"configuration": {"endpointURL": "https://s3.example.internal"}}))
    assert "destinationPath" in str(refused.value), refused.value


def test_a_five_field_schedule_is_refused():
    with pytest.raises(RenderError) as refused:
        render_chart(with_backup(objectStore={"configuration": STORE_CONFIGURATION}, schedule="0 0 * * *"))
    assert names_key(str(refused.value), "postgres.cluster.backup.schedule"), refused.value


def test_backups_of_a_cluster_the_chart_does_not_create_are_refused():
    values = with_backup(objectStore={"configuration": STORE_CONFIGURATION})
    values["postgres"]["cluster"].update(create=False, name="shared-pg")
    with pytest.raises(RenderError) as refused:
        render_chart(values)
    assert "postgres.cluster.backup.enabled" in str(refused.value), refused.value


# --- reconnection --------------------------------------------------------------------


def engine_settings(values=None):
    raw = yaml.safe_load(get(render_chart(values), "ConfigMap", "openmeter-config")["data"]["config.yaml"])
    return engine_config.build_config(raw)


def test_reconnection_caps_default_to_the_engine_defaults():
    loaded = engine_settings()
    assert loaded.postgres.reconnect_timeout == engine_config.PostgresConfig.reconnect_timeout
    assert loaded.sink.retry_max_delay == engine_config.SinkConfig.retry_max_delay


def test_reconnection_caps_reach_the_engine():
    loaded = engine_settings({"postgres": {"reconnectTimeout": "30s"}, "sink": {"retryMaxDelay": "2s"}})
    assert (loaded.postgres.reconnect_timeout, loaded.sink.retry_max_delay) == (30.0, 2.0)
