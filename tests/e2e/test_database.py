"""The engine's PostgreSQL on kind: Cluster manifests, the wait, the Secret copy; kubectl-level helpers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from e2e.lib import database
from testkit.chart.schemas import validate_object
from testkit.kube import APPLY_ARGS, Kubectl, KubeError, manifest_list, pod_problems
from testkit.platform import load_platform
from testkit.selectors import parse_selector, selector_matches
from tests.e2e.recording_tool import recording_tool

PLATFORM = load_platform()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_cluster_manifests_are_valid_cnpg_clusters():
    dbs = PLATFORM.databases
    for cluster in dbs.clusters:
        obj = database.cluster_manifest(cluster, dbs.namespace)
        validate_object(obj)  # against the CloudNativePG CRD in testkit/chart/crds
        assert obj["metadata"] == {
            "name": cluster.name,
            "namespace": dbs.namespace,
            "labels": {"app.kubernetes.io/managed-by": "bp-openmeter-e2e"},
        }
        assert obj["spec"]["bootstrap"]["initdb"] == {"database": cluster.database, "owner": cluster.owner}
    validate_object(database.namespace_manifest(dbs.namespace))


def test_install_databases_applies_the_clusters_then_waits_until_each_is_ready(tmp_path):
    kubectl = recording_tool(tmp_path / "bin", "kubectl")
    dbs = PLATFORM.databases
    database.install_databases(Kubectl(kubectl.path), dbs, timeout=600)
    apply, *waits = kubectl.calls()
    assert [(o["kind"], o["metadata"]["name"]) for o in json.loads(apply["stdin"])["items"]] == [
        ("Namespace", dbs.namespace),
        *(("Cluster", c.name) for c in dbs.clusters),
    ]
    assert len(waits) == len(dbs.clusters)
    for call, cluster in zip(waits, dbs.clusters):
        words = [a for a in call["argv"] if not a.startswith("--")]
        flags = dict(a.split("=", 1) for a in call["argv"] if a.startswith("--") and "=" in a)
        assert words[0] == "wait" and f"clusters.postgresql.cnpg.io/{cluster.name}" in words
        assert call["argv"][call["argv"].index("--namespace") + 1] == dbs.namespace
        assert flags == {"--for": "condition=Ready", "--timeout": "600s"}


SOURCE = {
    "apiVersion": "v1",
    "kind": "Secret",
    "type": "kubernetes.io/basic-auth",
    "metadata": {
        "name": "shared-pg-app",
        "namespace": "databases",
        "uid": "u",
        "resourceVersion": "7",
        "ownerReferences": [{"kind": "Cluster", "name": "shared-pg"}],
    },
    "data": {
        "username": b64("openmeter"),
        "password": b64("pw"),
        "uri": b64("postgresql://openmeter:pw@shared-pg-rw.databases:5432/openmeter"),
        "fqdn-uri": b64("postgresql://openmeter:pw@shared-pg-rw.databases.svc.cluster.local:5432/openmeter"),
    },
}


def test_secret_copy_keeps_the_data_uses_the_fully_qualified_uri_and_drops_ownership():
    copy = database.secret_copy(SOURCE, "bp-openmeter-db", "bp-openmeter-e2e")
    validate_object(copy)
    assert copy["metadata"]["namespace"] == "bp-openmeter-e2e" and "ownerReferences" not in copy["metadata"]
    assert "uid" not in copy["metadata"] and "resourceVersion" not in copy["metadata"]
    assert database.decoded(copy, "uri").endswith("@shared-pg-rw.databases.svc.cluster.local:5432/openmeter")
    assert copy["type"] == "kubernetes.io/basic-auth" and database.decoded(copy, "password") == "pw"


def test_secret_without_uri_is_refused_with_its_keys():
    with pytest.raises(KubeError, match=r"has no uri key \(keys: \['password'\]\)"):
        database.secret_copy({"metadata": {"name": "x", "namespace": "y"}, "data": {"password": "cA=="}}, "c", "n")


def test_copy_engine_secret_reads_then_applies_on_stdin(tmp_path):
    """A fake kubectl: `get secret` answers SOURCE, `apply` records what came on stdin."""
    script = tmp_path / "kubectl"
    record = tmp_path / "applied.json"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
if "get" in args:
    print(json.dumps({json.dumps(SOURCE)!s}))
elif args[-3:] == ["apply", "--filename", "-"]:
    open({str(record)!r}, "w").write(sys.stdin.read())
else:
    sys.exit(9)
""")
    script.chmod(0o755)
    name = database.copy_engine_secret(Kubectl(script, Path("/k")), PLATFORM.databases, "bp-openmeter-e2e")
    applied = json.loads(record.read_text())
    assert name == PLATFORM.databases.secret_copy
    assert [(o["kind"], o["metadata"]["name"]) for o in applied["items"]] == [
        ("Namespace", "bp-openmeter-e2e"),
        ("Secret", PLATFORM.databases.secret_copy),
    ]


def test_manifest_list_is_one_document_for_apply():
    assert APPLY_ARGS == ("apply", "--filename", "-")
    text = manifest_list([{"kind": "A"}, {"kind": "B"}])
    assert json.loads(text) == {"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]}


def test_pod_problems_wants_running_not_ready():
    pods = {
        "items": [
            {
                "metadata": {"name": "probe-api"},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "probe", "ready": False, "state": {"running": {}}}],
                },
            },
            {
                "metadata": {"name": "probe-sink"},
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": "probe",
                            "state": {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}},
                        }
                    ],
                },
            },
            {"metadata": {"name": "old", "deletionTimestamp": "2025-01-01T00:00:00Z"}, "status": {"phase": "Running"}},
        ]
    }
    assert pod_problems(pods, ["probe-api", "probe-sink", "probe-migrate"]) == [
        "probe-migrate: no such pod",
        "old: being deleted",
        "probe-sink: phase Pending, container probe: ErrImagePull (manifest unknown)",
    ]
    assert pod_problems({"items": pods["items"][:1]}, ["probe-api"]) == []


def test_selectors_are_equality_terms_only():
    assert parse_selector("a=b, c=d") == {"a": "b", "c": "d"}
    assert selector_matches("a=b", {"a": "b", "x": "y"}) and not selector_matches("a=b", {"a": "c"})
    for bad in ("a!=b", "a", "!a", "a==b", ""):
        with pytest.raises(ValueError):
            parse_selector(bad)
