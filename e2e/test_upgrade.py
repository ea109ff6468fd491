"""`helm upgrade` from the previous release to the candidate while ingest goes on (kind target only).

What the release gate exists to approve: e2e/lib/upgrade.py says how. The previous
release's chart (from git at fixtures/platform.yaml `previousRelease`) and engine
image run a release of their own with a two-instance CloudNativePG cluster; an
in-cluster client posts all along; the release is upgraded to the candidate chart
and image with the same values file. Afterwards posted = acknowledged = stored =
queried, and while the release rolled the client got only 204 or retriable answers.
"""

from __future__ import annotations

import httpx
import pytest

from e2e.lib import upgrade
from testkit import previous_release
from testkit.chart.render import renderable_chart
from testkit.kube import CLUSTER_POLL, PortForward, find_service
from testkit.paths import CACHE
from testkit.timeouts import TIMEOUTS
from testkit.values import write_values
from testkit.wait import poll

pytestmark = pytest.mark.kind_only


def _image_of(kubectl, namespace: str, selector: str) -> tuple[str, str]:
    deployment = kubectl.json("get", "deployments", "--namespace", namespace, "--selector", selector)["items"][0]
    repository, _, tag = deployment["spec"]["template"]["spec"]["containers"][0]["image"].rpartition(":")
    return repository, tag


def test_helm_upgrade_from_the_previous_release_under_ingest(target, platform_config, run_id, artifacts, request):
    from e2e.lib.database import namespace_manifest
    from e2e.lib.diagnostics import collect_cluster
    from testkit.helm import Helm
    from testkit.tools import ensure_tools

    backend = request.config.getoption("--backend")
    if platform_config.blueprint.api[backend].metrics_port is None:
        pytest.skip(f"the {backend} profile deploys upstream OpenMeter; the upgrade under test is the engine's")
    previous_image = request.config.getoption("--previous-engine-image")
    if not previous_image:
        pytest.skip("no previous engine image: the kind tier's `chart` step builds it (or --previous-engine-image)")
    bp = platform_config.blueprint
    api = bp.api[backend]
    kubectl = target.kubectl
    helm = Helm(ensure_tools().helm, target.kubeconfig, cache=CACHE / "helm")
    namespace = run_id.namespace("upgrade")
    candidate = _image_of(kubectl, target.namespace, api.selector)
    previous_repository, _, previous_tag = previous_image.rpartition(":")
    values = upgrade.release_values(platform_config, previous_repository, previous_tag)
    values_file = artifacts / "values" / f"{upgrade.UPGRADE_RELEASE}.yaml"
    kubectl.apply([namespace_manifest(namespace, run_id.labels())])
    try:
        # 1. the previous release, as it was released
        write_values(values_file, values)
        with renderable_chart(values, previous_release.chart_dir()) as chart:
            helm.run(
                upgrade.helm_argv(chart, namespace, values_file, TIMEOUTS.helm_install), TIMEOUTS.helm_install + 20
            )
        service, port = find_service(kubectl, namespace, api.selector, api.port)
        url = upgrade.api_url(namespace, service.removeprefix("svc/"), int(port))
        kubectl.apply(
            upgrade.client_manifests(namespace, ":".join(candidate), url, f"up-{run_id.value}", run_id.labels())
        )
        job = f"job/{upgrade.UPGRADE_RELEASE}-client"

        def acknowledged() -> int:
            log = kubectl.run("logs", "--namespace", namespace, job, check=False).stdout
            counts = [int(line.rsplit("=", 1)[1]) for line in log.splitlines() if line.startswith("progress ")]
            return counts[-1] if counts else 0

        def client_second() -> float:
            log = kubectl.run("logs", "--namespace", namespace, job, check=False).stdout
            seconds = [float(line.split()[1].split("=")[1]) for line in log.splitlines() if line.startswith("progress")]
            return seconds[-1] if seconds else 0.0

        assert poll(acknowledged, lambda n: n >= 500, 300, **CLUSTER_POLL).done, "the client got no 204s"

        # 2. the upgrade: the candidate chart and image, the same values file
        upgrade_from = client_second()
        values = upgrade.with_image(values, bp, *candidate)
        write_values(values_file, values)
        with renderable_chart(values) as chart:
            helm.run(
                upgrade.helm_argv(chart, namespace, values_file, TIMEOUTS.helm_install), TIMEOUTS.helm_install + 20
            )
        # The client's progress lines are 5 s apart: the first one after the upgrade marks its end.
        upgrade_until = poll(client_second, lambda s: s > upgrade_from + 5, 60, **CLUSTER_POLL).last

        # 3. the client's ledger against the database and the query API
        kubectl.run(
            "wait", "--namespace", namespace, "--for=condition=complete", job,
            f"--timeout={upgrade.CLIENT_SECONDS + 600}s", timeout=upgrade.CLIENT_SECONDS + 620,
        )  # fmt: skip
        summary = upgrade.client_summary(kubectl.run("logs", "--namespace", namespace, job).stdout)
        cluster = kubectl.json("get", "clusters.postgresql.cnpg.io", "--namespace", namespace)["items"][0]
        primary = kubectl.json(
            "get", "pods", "--namespace", namespace, "--selector", upgrade.primary_selector(cluster["metadata"]["name"])
        )["items"][0]["metadata"]["name"]
        database = cluster["spec"]["bootstrap"]["initdb"]["database"]
        stored = int(kubectl.run(*upgrade.stored_count_argv(namespace, primary, database)).stdout.strip())
        with PortForward(kubectl, namespace, service, port) as forward:

            def queried() -> int:
                response = httpx.get(f"{forward.url}/api/v1/meters/{upgrade.COUNT_METER}/query", timeout=10)
                response.raise_for_status()
                return int(sum(row["value"] for row in response.json()["data"]))

            counted = poll(queried, lambda n: n >= summary["acknowledged"], TIMEOUTS.usage_convergence).last
        during = upgrade.answers_between(summary, upgrade_from, upgrade_until)
        print(
            f"helm upgrade from {previous_release.commit()[:7]}: posted={summary['posted']} "
            f"acknowledged={summary['acknowledged']} stored={stored} queried={counted} | "
            f"answers_during_upgrade={during} answers={summary['answers']}"
        )
        assert set(during) <= upgrade.RETRIABLE, during
        assert summary["posted"] == summary["acknowledged"] == stored == counted, summary["unacknowledged"]
    finally:
        if request.session.testsfailed:
            collect_cluster(kubectl, [namespace], artifacts / "upgrade")
        helm.run(["uninstall", upgrade.UPGRADE_RELEASE, "--namespace", namespace, "--wait=watcher"], timeout=320)
        kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=300s", timeout=320)
