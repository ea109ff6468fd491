"""The release gate's question, asked on a live cluster: does `helm upgrade` from the
previous release to the candidate lose anything while ingest goes on?

A release of its own (`UPGRADE_RELEASE`, in a namespace of the run) is installed from
the previous release's chart, rendered from git at fixtures/platform.yaml
`previousRelease` (testkit/previous_release.py), running the previous engine image
(built from the same tree by the `chart` step). It gets a CloudNativePG cluster of its
own with two instances: the candidate chart turns synchronous replication on for it
during the upgrade. An in-cluster client (ingest_client.py, a Job) posts events all
along; meanwhile the release is upgraded with `helm upgrade` to the candidate chart
and image, with the same values file, as an operator would (those values carry what
docs/operations.md "Upgrades" says to set when leaving that release). Then the client's ledger
(posted, acknowledged, answers by second) is compared with the rows in PostgreSQL and
the query API's count.

Everything here builds values, command lines and manifests; e2e/test_upgrade.py runs
them on the cluster, and the tests of tests/e2e/ check them without one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from testkit.helm import WAIT
from testkit.platform import Blueprint, Platform
from testkit.values import merge_values, nested

UPGRADE_RELEASE = "bpom-upgrade"
EVENT_TYPE = "upgrade.kind"
COUNT_METER = "upgrade_events"
CLIENT_FILE = Path(__file__).with_name("ingest_client.py")
CLIENT_MOUNT = "/client"
# How long the client makes new events: it must outlast the helm upgrade (pods rolled,
# migration Job, CloudNativePG reconfigured), which the test starts once it posts.
CLIENT_SECONDS = 240
CLIENT_RATE = 100
# The answers a client may get while the release rolls: a retry with the same ids settles each.
RETRIABLE = {"204", "503", "no answer"}


def previous_image_tag(commit: str) -> str:
    """The tag the previous engine image is built under (then tagged by content, as the candidate's)."""
    return f"previous-{commit[:12]}"


def release_values(platform: Platform, repository: str, tag: str) -> dict[str, Any]:
    """The one values file of the upgrade release, before and after (as `helm upgrade -f`)."""
    bp: Blueprint = platform.blueprint
    own = {
        # A cluster of its own, created by the chart (both the previous and the candidate
        # chart can), with a standby: the candidate renders synchronous replication for it.
        "postgres": {"cluster": {"create": True, "instances": 2}},
        "meters": [{"slug": COUNT_METER, "eventType": EVENT_TYPE, "aggregation": "COUNT"}],
    }
    image = nested({bp.repository_value: repository, bp.tag_value: tag, bp.pull_policy_value: "IfNotPresent"})
    return merge_values(merge_values(platform.previous_release.upgrade_values, own), image)


def with_image(values: Mapping[str, Any], bp: Blueprint, repository: str, tag: str) -> dict[str, Any]:
    return merge_values(values, nested({bp.repository_value: repository, bp.tag_value: tag}))


def helm_argv(chart_dir: Path, namespace: str, values_file: Path, timeout: float) -> list[str]:
    """`helm upgrade --install` of the upgrade release: the install of the previous chart, and the upgrade."""
    return [
        "upgrade",
        "--install",
        UPGRADE_RELEASE,
        str(chart_dir),
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        str(values_file),
        *WAIT,
        "--timeout",
        f"{int(timeout)}s",
    ]


def api_url(namespace: str, service: str, port: int) -> str:
    """The release's api Service as a pod in the cluster reaches it."""
    return f"http://{service}.{namespace}.svc.cluster.local:{port}"


def client_manifests(
    namespace: str, image: str, url: str, prefix: str, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The client program (a ConfigMap) and the Job that runs it once, with the engine image's python."""
    name = f"{UPGRADE_RELEASE}-client"
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": {CLIENT_FILE.name: CLIENT_FILE.read_text()},
    }
    argv = [
        "python",
        "-B",
        f"{CLIENT_MOUNT}/{CLIENT_FILE.name}",
        url,
        "--prefix",
        prefix,
        "--type",
        EVENT_TYPE,
        "--seconds",
        str(CLIENT_SECONDS),
        "--rate",
        str(CLIENT_RATE),
    ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": 0,  # a second run would post other events: one run, its ledger, or a failure
            "activeDeadlineSeconds": CLIENT_SECONDS + 600,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                    "containers": [
                        {
                            "name": "client",
                            "image": image,
                            "command": argv,
                            "volumeMounts": [{"name": "program", "mountPath": CLIENT_MOUNT, "readOnly": True}],
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                    "volumes": [{"name": "program", "configMap": {"name": name}}],
                },
            },
        },
    }
    return [configmap, job]


def client_summary(log: str) -> dict[str, Any]:
    """The client's last line: its JSON ledger."""
    for line in reversed(log.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"the client printed no summary; its log ends with: {log[-2000:]!r}")


def answers_between(summary: Mapping[str, Any], since: float, until: float) -> dict[str, int]:
    """The client's answers to requests sent between two of its seconds (since its start)."""
    counts: dict[str, int] = {}
    for second, answer in summary["answers_by_second"]:
        if since <= second <= until:
            counts[answer] = counts.get(answer, 0) + 1
    return counts


def primary_selector(cluster: str) -> str:
    """The label selector of a CloudNativePG cluster's primary pod (the one its `-rw` Service selects)."""
    return f"cnpg.io/cluster={cluster},cnpg.io/instanceRole=primary"


def stored_count_argv(namespace: str, pod: str, database: str) -> list[str]:
    """kubectl exec into the primary: the client's events in the release's database (psql as postgres)."""
    return [
        "exec",
        "--namespace",
        namespace,
        pod,
        "--container",
        "postgres",
        "--",
        "psql",
        "--dbname",
        database,
        "--tuples-only",
        "--no-align",
        "--command",
        f"SELECT count(*) FROM events WHERE type = '{EVENT_TYPE}'",  # a constant of this module
    ]
