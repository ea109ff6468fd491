"""The backend switch's export into upstream OpenMeter (kind only, clickhouse cell).

The release under test is upstream OpenMeter on ClickHouse. Beside it, in a namespace of
this run, the chart runs the engine (cnpg profile, a CloudNativePG cluster of its own)
and takes in the fixture events. Then the same release turns export.enabled on with the
upstream API as its target: the export Job streams the stored events there, and for
every meter, per subject and day, upstream must count what the engine counts and what
the reference calculation expects.

The engine image is the one the chart step loaded (BPOM_E2E_ENGINE_IMAGE=REPO:TAG, or
the content tag of the image built from Dockerfile).
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from e2e.lib.switch import source_sets
from testkit.client import OpenMeterClient
from testkit.kube import CLUSTER_POLL, PortForward, find_service
from testkit.paths import CACHE
from testkit.timeouts import TIMEOUTS
from testkit.usage.compare import wait_until_agrees
from testkit.usage.events import RunScope, load_events, reference_events, reference_meter
from testkit.usage.reference import Query, expected_usage
from testkit.wait import wait_until

pytestmark = pytest.mark.kind_only

SOURCE = "bpom-source"
ENGINE = "cnpg"
EXPORT_NAME = "to-upstream"


def _engine_image(platform_config) -> tuple[str, str]:
    given = os.environ.get("BPOM_E2E_ENGINE_IMAGE")
    if given:
        repository, _, tag = given.rpartition(":")
        return repository, tag
    from e2e.lib.images import existing_tag

    bp = platform_config.blueprint
    return bp.image_repository, existing_tag(bp.image_repository, bp.image_tag)


@pytest.fixture(scope="module")
def source(target, platform_config, run_id, artifacts, request) -> Iterator[tuple]:
    from e2e.lib.chart import install_blueprint, uninstall_args
    from e2e.lib.database import namespace_manifest
    from e2e.lib.diagnostics import collect_cluster
    from testkit.helm import Helm
    from testkit.selectors import parse_selector
    from testkit.tools import ensure_tools

    if request.config.getoption("--backend") != "clickhouse":
        pytest.skip("exports into the upstream release under test: the clickhouse cell")
    bp = platform_config.blueprint
    helm = Helm(ensure_tools().helm, target.kubeconfig, cache=CACHE / "helm")
    namespace = run_id.namespace("export")
    target.kubectl.apply([namespace_manifest(namespace, run_id.labels())])
    repository, tag = _engine_image(platform_config)
    sets = source_sets(target.namespace, parse_selector(bp.api["clickhouse"].selector))
    install = dict(
        helm=helm,
        blueprint=bp,
        backend=ENGINE,
        repository=repository,
        tag=tag,
        workdir=artifacts / "values",
        release=SOURCE,
        namespace=namespace,
    )
    try:
        install_blueprint(**install, sets=sets)
        service, port = find_service(target.kubectl, namespace, bp.api[ENGINE].selector, bp.api[ENGINE].port)
        with PortForward(target.kubectl, namespace, service, port) as forward:
            client = OpenMeterClient(forward.url, on_transient=forward.ensure)
            wait_until(
                client.answers, TIMEOUTS.api_answers, f"the engine release in {namespace} answering", **CLUSTER_POLL
            )
            yield helm, install, sets, namespace, client
            client.close()
    finally:
        if request.session.testsfailed:
            collect_cluster(target.kubectl, [namespace], artifacts / "export")
        helm.run(uninstall_args(SOURCE, namespace), timeout=320)
        target.kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=300s", timeout=320)


def test_the_export_job_moves_the_history_into_upstream(source, target, api, fixture_meters, run_id):
    from e2e.lib.chart import install_blueprint

    helm, install, sets, namespace, engine = source
    scope = RunScope(run_id, "export")
    sent = scope.events(load_events())
    engine.ensure_meters(fixture_meters)
    engine.send_batch(sent)
    reference = reference_events(sent)
    meters = {m["slug"]: m for m in fixture_meters}
    queries = {
        slug: Query(window_size="DAY", subjects=scope.subjects(load_events()), group_by=("subject",)) for slug in meters
    }
    for slug, query in queries.items():  # the engine holds the history
        wait_until_agrees(
            lambda s=slug, q=query: engine.usage(s, q),
            expected_usage(reference_meter(meters[slug]), reference, query),
            TIMEOUTS.usage_convergence,
            f"engine {slug}",
            engine.usage_reproduce(slug, query),
        )

    upstream_service, upstream_port = find_service(
        target.kubectl,
        target.namespace,
        install["blueprint"].api["clickhouse"].selector,
        install["blueprint"].api["clickhouse"].port,
    )
    url = f"http://{upstream_service.removeprefix('svc/')}.{target.namespace}.svc:{upstream_port}"
    install_blueprint(
        **install,
        sets={
            **sets,
            "export.enabled": True,
            "export.name": EXPORT_NAME,
            "export.target.url": url,
            "export.waitDrained": "2m",
        },
    )
    job = f"{SOURCE}-openmeter-export-2"  # <fullname>-export-<revision>: the upgrade is revision 2
    target.kubectl.run(
        "wait",
        "--for=condition=complete",
        f"job/{job}",
        "--namespace",
        namespace,
        f"--timeout={int(TIMEOUTS.export_job)}s",
        timeout=TIMEOUTS.export_job + 15,
    )

    for slug, query in queries.items():  # upstream counts what the engine counts
        wait_until_agrees(
            lambda s=slug, q=query: api.usage(s, q),
            expected_usage(reference_meter(meters[slug]), reference, query),
            TIMEOUTS.usage_convergence,
            f"upstream {slug} after the export",
            api.usage_reproduce(slug, query),
        )
