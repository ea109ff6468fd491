"""The engine's PostgreSQL on the kind cluster: CloudNativePG clusters and the engine's Secret.

fixtures/platform.yaml `databases` names the clusters (in a namespace of their own)
and the one the engine uses. The platform step creates them and waits until the
operator reports them Ready; before the blueprint is installed into a namespace, the
engine cluster's app Secret is copied there, because a pod can only read Secrets of
its own namespace. The copy's `uri` is the operator's fully qualified `fqdn-uri`
(when the operator writes one), so it resolves from any namespace.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping

from e2e.lib.progress import step
from testkit.kube import Kubectl, KubeError
from testkit.platform import DatabaseCluster, Databases
from testkit.timeouts import TIMEOUTS

CNPG_API = "postgresql.cnpg.io/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "bp-openmeter-e2e"}


def namespace_manifest(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**MANAGED_BY, **(labels or {})}},
    }


def cluster_manifest(cluster: DatabaseCluster, namespace: str) -> dict[str, Any]:
    """A CloudNativePG Cluster sized for kind (one instance, the operator's default image)."""
    return {
        "apiVersion": CNPG_API,
        "kind": "Cluster",
        "metadata": {"name": cluster.name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "instances": cluster.instances,
            "bootstrap": {"initdb": {"database": cluster.database, "owner": cluster.owner}},
            "storage": {"size": cluster.storage},
        },
    }


def wait_ready_args(cluster: str, namespace: str, timeout: float) -> list[str]:
    return [
        "wait",
        "--for=condition=Ready",
        f"clusters.postgresql.cnpg.io/{cluster}",
        "--namespace",
        namespace,
        f"--timeout={int(timeout)}s",
    ]


def install_databases(kubectl: Kubectl, databases: Databases, timeout: float = TIMEOUTS.databases_ready) -> None:
    objects = [namespace_manifest(databases.namespace)]
    objects += [cluster_manifest(c, databases.namespace) for c in databases.clusters]
    names = ", ".join(c.name for c in databases.clusters)
    with step(f"creating CloudNativePG clusters {names} in {databases.namespace}", timeout=120):
        kubectl.apply(objects)
    for cluster in databases.clusters:
        with step(
            f"waiting for CloudNativePG cluster {databases.namespace}/{cluster.name}",
            waiting_for="the operator's Ready condition (initdb, first instance streaming)",
            timeout=timeout + 30,
        ):
            kubectl.run(*wait_ready_args(cluster.name, databases.namespace, timeout), timeout=timeout + 20)


def secret_copy(source: Mapping[str, Any], name: str, namespace: str) -> dict[str, Any]:
    """A copy of the operator's app Secret for another namespace (data only, `uri` fully qualified)."""
    data = dict(source.get("data") or {})
    if "uri" not in data and "fqdn-uri" not in data:
        src = source.get("metadata", {})
        raise KubeError(
            f"Secret {src.get('namespace')}/{src.get('name')} has no uri key "
            f"(keys: {sorted(data)}); is it a CloudNativePG app Secret?"
        )
    if "fqdn-uri" in data:
        data["uri"] = data["fqdn-uri"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": source.get("type", "Opaque"),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, "bp-openmeter.e2e/copy-of": source["metadata"]["name"]},
        },
        "data": data,
    }


def decoded(secret: Mapping[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def copy_engine_secret(kubectl: Kubectl, databases: Databases, namespace: str) -> str:
    """Create the release namespace if needed and copy the engine cluster's app Secret into it."""
    source = kubectl.json("get", "secret", databases.engine_secret, "--namespace", databases.namespace)
    with step(
        f"copying Secret {databases.namespace}/{databases.engine_secret} to {namespace}/{databases.secret_copy}",
        timeout=120,
    ):
        kubectl.apply([namespace_manifest(namespace), secret_copy(source, databases.secret_copy, namespace)])
    return databases.secret_copy
