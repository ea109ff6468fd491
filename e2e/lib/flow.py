"""The kind tier's steps: preflight, up, platform, chart, test, diagnostics, down, all.

Each nox session of the kind tier runs one of them (`python -m e2e <step>`); `all`
is the whole flow of `nox -s e2e`. Versions, values and names come from
fixtures/platform.yaml; waits from testkit/timeouts.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from e2e.lib import docker_hub, prereqs
from e2e.lib.options import Options
from e2e.lib.progress import REPORTER, StepTimeout, step
from testkit.paths import ARTIFACTS, CACHE, KIND_CLUSTERS, REPO_ROOT
from testkit.platform import Platform, load_platform
from testkit.runid import RunId
from testkit.timeouts import TIMEOUTS


def kind_kubeconfig(cluster_name: str) -> Path:
    """Where pytest-kind-ng keeps a cluster's kubeconfig (its `.pytest-kind/<name>/` folder)."""
    return KIND_CLUSTERS / cluster_name / "kubeconfig"


@dataclass
class Plan:
    opts: Options
    platform: Platform
    run_id: RunId
    # Set once `up` starts creating (or reusing) the cluster: from then on a failure may
    # leave a cluster or retained nodes behind, which the flow saves and deletes.
    created: bool = False

    @property
    def cluster_name(self) -> str:
        return self.opts.cluster_name or self.platform.cluster_name

    @property
    def kubeconfig(self) -> Path:
        return self.opts.kubeconfig or kind_kubeconfig(self.cluster_name)

    @property
    def artifacts(self) -> Path:
        return (self.opts.artifacts_dir or ARTIFACTS / self.run_id.value).resolve()

    @property
    def node_image(self) -> str:
        return self.platform.node_image(self.opts.node_image)


def make_plan(opts: Options, platform: Platform | None = None) -> Plan:
    run_id = RunId(opts.run_id) if opts.run_id else RunId.new()
    return Plan(opts, platform or load_platform(), run_id)


# --- prerequisites -------------------------------------------------------------------


def steps_of(step_name: str) -> tuple[str, ...]:
    return ("up", "platform", "chart", "test") if step_name == "all" else (step_name,)


def needs_kind(plan: Plan, step_names: Sequence[str]) -> bool:
    """Docker and kind: to create or delete the cluster, or to load an image built here into it."""
    steps, opts = set(step_names), plan.opts
    if opts.existing_cluster:
        return False
    return bool(steps & {"up", "down"}) or ("chart" in steps and not opts.engine_image)


def needs_tools(step_names: Sequence[str]) -> bool:
    return bool(set(step_names) & {"platform", "chart", "test", "diagnostics"})


def checks_for(
    plan: Plan,
    step_names: Sequence[str],
    *,
    kind_obtain: Callable[[str], Path] | None = None,
    tools_obtain: Callable[[], object] | None = None,
    probe: prereqs.Probe | None = None,
    fetch: prereqs.Fetch | None = None,
    inotify_read: Callable[[str], str | None] | None = None,
    disk_usage: Callable[[Path], object] | None = None,
    docker_hub_allowance: Callable[[], docker_hub.Allowance | None] | None = None,
    docker_login: bool | None = None,
) -> prereqs.Wanted:
    """The checks the given steps need, as thunks by name: the downloads first, then the rest (prereqs.run_all)."""
    from testkit import kind as kindmod
    from testkit import tools as toolsmod

    opts, platform = plan.opts, plan.platform
    kind_obtain = kind_obtain or (lambda version: kindmod.ensure_kind(version))
    tools_obtain = tools_obtain or toolsmod.ensure_tools
    probe_kw = {"probe": probe} if probe else {}
    fetch_kw = {"fetch": fetch} if fetch else {}
    steps = set(step_names)
    downloads: dict[str, Callable[[], prereqs.Check]] = {}
    wanted: dict[str, Callable[[], prereqs.Check]] = {}
    existing = opts.existing_cluster
    if needs_kind(plan, step_names):
        wanted["docker"] = prereqs.check_docker_cli
        wanted["docker daemon"] = prereqs.check_docker_daemon
        downloads[f"kind {platform.kind_version}"] = lambda: prereqs.check_kind(platform.kind_version, kind_obtain)
    if "up" in steps and not existing:
        host = platform.host
        wanted["inotify limits"] = lambda: prereqs.check_inotify(
            host.max_user_watches, host.max_user_instances, read=inotify_read
        )
        wanted["free disk"] = lambda: _free_disk(host.free_disk_gib, disk_usage)
    if "chart" in steps and existing and not opts.engine_image:
        wanted["engine image"] = lambda: prereqs.Check(
            "engine image",
            False,
            "--kubeconfig names a cluster this suite cannot load images into",
            "push the engine image to a registry the cluster pulls from and pass --engine-image REPO:TAG",
        )
    if "up" in steps and not existing:
        wanted["container registry registry-1.docker.io"] = lambda: prereqs.check_registry(
            "registry-1.docker.io", **probe_kw
        )
        wanted["Docker Hub pull allowance"] = lambda: _docker_hub_allowance(plan, docker_hub_allowance, docker_login)
    if needs_tools(step_names):
        # An existing cluster's version is not known before it is asked; kind's is the node image's.
        node_image = None if existing else plan.node_image
        downloads[f"helm {toolsmod.HELM_VERSION} / kubectl {toolsmod.KUBECTL_VERSION}"] = lambda: prereqs.check_tools(
            tools_obtain, node_image
        )
    if needs_tools(step_names) and "up" not in steps:
        wanted["cluster kubeconfig"] = lambda: prereqs.check_file(
            "cluster kubeconfig",
            plan.kubeconfig,
            "create the cluster first (`nox -s e2e-up`) or pass --kubeconfig PATH of an existing cluster",
        )
    if "platform" in steps:
        for chart in platform.charts:
            wanted[f"chart {chart.chart} {chart.version} ({chart.name})"] = lambda c=chart: prereqs.check_chart_release(
                c.name, c.repo, c.chart, c.version, **fetch_kw, **probe_kw
            )
        for host_name in platform.registries:
            wanted[f"container registry {host_name}"] = lambda h=host_name: prereqs.check_registry(h, **probe_kw)
    if "test" in steps and opts.backend == "cnpg":
        # The HTTPS test (e2e/test_exposure.py) installs its controller and the Gateway API CRDs.
        exposure = platform.exposure
        controller = exposure.controller
        wanted[f"chart {controller.chart} {controller.version} ({controller.name})"] = lambda: (
            prereqs.check_chart_release(
                controller.name, controller.repo, controller.chart, controller.version, **fetch_kw, **probe_kw
            )
        )
        first = sorted(exposure.gateway_api.files)[0]
        wanted[f"Gateway API {exposure.gateway_api.version} CRDs"] = lambda: prereqs.check_url(
            f"Gateway API {exposure.gateway_api.version} CRDs",
            exposure.gateway_api.file_url(first),
            f"allow HTTPS to {exposure.gateway_api.file_url(first).split('/')[2]}",
            **probe_kw,
        )
    if "chart" in steps and opts.backend == "clickhouse":
        # The upstream openmeter chart is vendored from its OCI registry (helm dependency build).
        wanted["container registry ghcr.io"] = lambda: prereqs.check_registry("ghcr.io", **probe_kw)
    if "chart" in steps:
        wanted["blueprint chart"] = lambda: prereqs.check_file(
            "blueprint chart",
            platform.blueprint.chart_dir / "Chart.yaml",
            "the blueprint chart must exist at chart/ (Chart.yaml) in this checkout",
        )
        if not opts.engine_image and not opts.skip_build:
            wanted["engine Dockerfile"] = lambda: prereqs.check_file(
                "engine Dockerfile",
                REPO_ROOT / "Dockerfile",
                "the engine image is built from Dockerfile at the repository root",
            )
    return prereqs.Wanted(downloads, wanted)


def _docker_hub_allowance(
    plan: Plan, read: Callable[[], docker_hub.Allowance | None] | None, login: bool | None
) -> prereqs.Check:
    """A new cluster pulls every Docker Hub image of the run once per node that runs it: enough left for that?"""
    pulls = docker_hub.run_pulls(plan.platform, plan.opts.backend, docker_hub.image_on_host)
    return docker_hub.check_allowance(
        pulls, read or docker_hub.read_allowance, docker_hub.logged_in() if login is None else login
    )


def _free_disk(min_gib: float, disk_usage: Callable[[Path], object] | None) -> prereqs.Check:
    """Free space where Docker keeps images, or, when that is not a local folder (a VM), this checkout's disk."""
    root = prereqs.docker_root()
    kw = {"disk_usage": disk_usage} if disk_usage else {}
    if root is not None:
        return prereqs.check_free_disk(min_gib, root, what=" (Docker's data root)", **kw)
    return prereqs.check_free_disk(
        min_gib, REPO_ROOT, what=" (this checkout; Docker's data root is not a folder of this machine)", **kw
    )


def run_prerequisites(wanted: prereqs.Wanted, what: str) -> list[prereqs.Check]:
    """The downloads under their own limit, then the checks under theirs: a slow first download never
    uses up the checks' time. Each group ends at its deadline with what did not answer named."""
    checks = []
    if wanted.downloads:
        with step(
            f"fetching {' and '.join(wanted.downloads)} for {what} (once; kept in .cache/tools)",
            waiting_for="the downloads",
            timeout=TIMEOUTS.tool_downloads + 30,  # a backstop: run_all returns at its deadline
        ):
            checks += prereqs.run_all(wanted.downloads, TIMEOUTS.tool_downloads, "tool_downloads")
    with step(f"checking the prerequisites of {what}", timeout=TIMEOUTS.prerequisites + 30, every=10):
        checks += prereqs.run_all(wanted.checks, TIMEOUTS.prerequisites, "prerequisites")
    return checks


def preflight(plan: Plan, step_names: Sequence[str], **kwargs) -> list[prereqs.Check]:
    what = f"`e2e {'/'.join(step_names)}`"
    checks = run_prerequisites(checks_for(plan, step_names, **kwargs), what)
    if any(not c.ok for c in checks):
        raise prereqs.PrerequisitesMissing(checks, what)
    REPORTER.say(prereqs.render(checks, "kind tier"))
    return checks


# --- steps ---------------------------------------------------------------------------


def _tools():
    from testkit.tools import ensure_tools

    return ensure_tools()


def tools_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of the suite's pytest: the helm and kubectl this flow uses (the tests run the same)."""
    tools = _tools()
    return {**environ, "BPOM_HELM": str(tools.helm), "BPOM_KUBECTL": str(tools.kubectl)}


def _helm(plan: Plan):
    from testkit.helm import Helm

    return Helm(_tools().helm, plan.kubeconfig, cache=CACHE / "helm")


def _kubectl(plan: Plan):
    from testkit.kube import Kubectl

    return Kubectl(_tools().kubectl, plan.kubeconfig)


def _cluster(plan: Plan):
    from testkit.kind import Cluster, ensure_kind

    return Cluster(
        plan.cluster_name,
        ensure_kind(plan.platform.kind_version),
        _tools().kubectl,
        node_image=plan.node_image,
        kubeconfig=plan.kubeconfig,
    )


def up(plan: Plan) -> None:
    if plan.opts.existing_cluster:
        REPORTER.say(f"using the existing cluster of {plan.kubeconfig}; nothing to create")
        return
    cluster = _cluster(plan)
    plan.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    plan.created = True  # before kind starts: a creation that fails half-way leaves nodes behind
    with step(
        f"creating kind cluster {plan.cluster_name} ({plan.node_image}, kind {plan.platform.kind_version})",
        waiting_for="kind create cluster (pulls the node image on first use)",
        timeout=TIMEOUTS.kind_create + 30,
    ):
        cluster.create(plan.platform.kind_config, timeout=TIMEOUTS.kind_create)
    kubectl = _kubectl(plan)
    with step("waiting for every node to be Ready", timeout=300):
        kubectl.run("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=280s", timeout=295)


def uses_databases(plan: Plan) -> bool:
    """The cnpg profile runs the engine on the CloudNativePG clusters of platform.yaml `databases`."""
    return plan.opts.backend == "cnpg"


def platform(plan: Plan) -> None:
    from e2e.lib.database import install_databases
    from e2e.lib.platform import install_platform

    install_platform(_helm(plan), plan.platform.charts, CACHE / "e2e" / "values")
    if uses_databases(plan):
        install_databases(_kubectl(plan), plan.platform.databases)


def engine_image(plan: Plan) -> tuple[str, str]:
    """(repository, tag) of the engine image the chart will run, built and loaded as needed."""
    from e2e.lib import images

    bp = plan.platform.blueprint
    if plan.opts.engine_image:
        repository, _, tag = plan.opts.engine_image.rpartition(":")
        if not repository or "/" in tag:
            raise ValueError(f"--engine-image {plan.opts.engine_image!r}: give REPOSITORY:TAG")
        return repository, tag
    if plan.opts.skip_build:
        tag = images.existing_tag(bp.image_repository, bp.image_tag)
        images._run(images.tag_argv(bp.image, f"{bp.image_repository}:{tag}"), timeout=60)
    else:
        tag = images.build(bp.image_repository, bp.image_tag)
    with step(
        f"loading {bp.image_repository}:{tag} into kind cluster {plan.cluster_name}",
        waiting_for="kind load docker-image (or its fallback, docker image save + kind load image-archive)",
        timeout=900,  # three commands of at most 280 s each
    ):
        _cluster(plan).load_image(f"{bp.image_repository}:{tag}", timeout=280, say=REPORTER.say)
    return bp.image_repository, tag


def previous_engine_image(plan: Plan, build: bool) -> str | None:
    """The previous release's engine image for the upgrade test (e2e/test_upgrade.py), or None.

    Given (--previous-engine-image): as it is. Else, on a cluster this flow loads images
    into: built from git at fixtures/platform.yaml previousRelease (its own Dockerfile)
    and loaded when `build`, or the one built earlier. Only the cnpg profile runs it.
    """
    from e2e.lib import images
    from e2e.lib.upgrade import previous_image_tag
    from testkit import previous_release

    if plan.opts.previous_engine_image:
        return plan.opts.previous_engine_image
    if plan.opts.backend != "cnpg" or plan.opts.existing_cluster or plan.opts.engine_image:
        return None
    repository = plan.platform.blueprint.image_repository
    if not build:
        try:
            base_tag = previous_image_tag(previous_release.commit())
            return f"{repository}:{images.existing_tag(repository, base_tag)}"
        except (images.ImageError, previous_release.PreviousReleaseError, OSError):
            return None  # never built here: the upgrade test says so and skips
    base_tag = previous_image_tag(previous_release.commit())
    tag = images.build(repository, base_tag, context=previous_release.source_tree())
    with step(
        f"loading the previous release's image {repository}:{tag} into kind cluster {plan.cluster_name}",
        waiting_for="kind load docker-image",
        timeout=600,
    ):
        _cluster(plan).load_image(f"{repository}:{tag}")
    return f"{repository}:{tag}"


def chart(plan: Plan) -> None:
    from e2e.lib.chart import install_blueprint
    from testkit.client import OpenMeterClient
    from testkit.kube import PortForward, find_service, wait_for_api

    bp = plan.platform.blueprint
    repository, tag = engine_image(plan)
    if not plan.opts.skip_build:
        previous_engine_image(plan, build=True)
    kubectl = _kubectl(plan)
    if uses_databases(plan):
        from e2e.lib.database import copy_engine_secret

        copy_engine_secret(kubectl, plan.platform.databases, bp.namespace)
    install_blueprint(_helm(plan), bp, plan.opts.backend, repository, tag, CACHE / "e2e" / "values")
    api = bp.api[plan.opts.backend]
    service, port = find_service(kubectl, bp.namespace, api.selector, api.port)
    with step(
        f"waiting until the API behind {bp.namespace}/{service} answers a real call",
        waiting_for="GET /api/v1/meters -> 200 through a port-forward",
        timeout=TIMEOUTS.api_answers + 30,
    ):
        with PortForward(kubectl, bp.namespace, service, port) as forward:
            with OpenMeterClient(forward.url, timeout=10) as client:
                wait_for_api(forward, client.answers)


def pytest_argv(plan: Plan) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "e2e",
        "--target",
        "kind",
        "--backend",
        plan.opts.backend,
        "--kubeconfig",
        str(plan.kubeconfig),
        "--cluster-name",
        plan.cluster_name,
        "--run-id",
        plan.run_id.value,
        "--artifacts-dir",
        str(plan.artifacts),
    ]
    if plan.opts.keep_cluster:
        argv.append("--keep-cluster")
    if plan.opts.cni_not_enforcing:
        argv.append("--cni-not-enforcing")
    previous = previous_engine_image(plan, build=False)
    if previous:
        argv += ["--previous-engine-image", previous]
    return argv + list(plan.opts.pytest_args)


def test(plan: Plan) -> int:
    argv = pytest_argv(plan)
    REPORTER.say(f"running the suite: {' '.join(argv[1:])}")
    return subprocess.run(argv, cwd=REPO_ROOT, env=tools_env()).returncode


def diagnostics(plan: Plan, label: str = "flow") -> Path:
    """Events, describe output and container logs of the namespaces; for a kind cluster also its node logs."""
    from e2e.lib.diagnostics import collect_cluster, collect_node_logs
    from testkit.kube import KubeError, namespaces_with_label

    kubectl = _kubectl(plan)
    namespaces = {plan.platform.blueprint.namespace, *(c.namespace for c in plan.platform.charts)}
    if uses_databases(plan):
        namespaces.add(plan.platform.databases.namespace)
    try:
        namespaces.update(namespaces_with_label(kubectl, plan.run_id.selector()))
    except KubeError as exc:
        REPORTER.say(f"could not list the run's test namespaces: {exc}")
    dest = plan.artifacts / label
    with step(f"saving diagnostics of {len(namespaces)} namespaces to {dest}", timeout=TIMEOUTS.diagnostics * 3):
        index = collect_cluster(kubectl, namespaces, dest)
    if not plan.opts.existing_cluster:
        with step(
            f"saving the node logs of kind cluster {plan.cluster_name} (kubelet, containerd, kindnetd...)",
            waiting_for="kind export logs",
            timeout=TIMEOUTS.diagnostics + 30,
        ):
            collect_node_logs(_cluster(plan).export_logs_argv(dest / "kind-logs"), dest, TIMEOUTS.diagnostics)
    REPORTER.say(f"diagnostics saved: {index}")
    return dest


def down(plan: Plan) -> None:
    if plan.opts.existing_cluster:
        REPORTER.say(f"not deleting the cluster of {plan.kubeconfig}: it was given with --kubeconfig")
        return
    with step(f"deleting kind cluster {plan.cluster_name}", timeout=300):
        _cluster(plan).delete()


def run_all(plan: Plan) -> int:
    """The whole flow; diagnostics are saved before anything is deleted."""
    failure: BaseException | None = None
    code = 1
    try:
        up(plan)
        platform(plan)
        chart(plan)
        code = test(plan)
    except (Exception, KeyboardInterrupt) as exc:  # reported below, after diagnostics
        failure = exc
    if (failure is not None or code != 0) and (plan.created or plan.opts.existing_cluster):
        try:
            diagnostics(plan)
        except Exception as exc:  # diagnostics must never mask the real failure
            REPORTER.say(f"saving diagnostics failed too: {exc!r}")
    if plan.created and not plan.opts.keep_cluster:
        try:
            down(plan)
        except Exception as exc:  # the run's own failure is the one to report
            if failure is None:
                raise
            REPORTER.say(f"deleting the cluster failed too: {exc!r}; delete it with `nox -s e2e-down`")
    elif plan.created:
        REPORTER.say(
            f"kept cluster {plan.cluster_name}; KUBECONFIG={plan.kubeconfig}; delete it with `nox -s e2e-down`"
        )
    if failure is not None:
        raise failure
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from e2e.lib.options import parse

    opts = parse(sys.argv[1:] if argv is None else argv)
    plan = make_plan(opts)
    os.environ.setdefault("BPOM_RUN_ID", plan.run_id.value)
    REPORTER.say(
        f"run {plan.run_id.value}: step {opts.step}, backend {opts.backend}, "
        f"cluster {'given by --kubeconfig' if opts.existing_cluster else plan.cluster_name}"
    )
    try:
        if opts.step == "preflight":
            preflight(plan, ("up", "platform", "chart", "test"))
            return 0
        preflight(plan, steps_of(opts.step))
        if opts.preflight_only:
            return 0
        if opts.step == "all":
            return run_all(plan)
        if opts.step == "test":
            return test(plan)
        {"up": up, "platform": platform, "chart": chart, "diagnostics": diagnostics, "down": down}[opts.step](plan)
        return 0
    except prereqs.PrerequisitesMissing as exc:
        print(f"\n{exc}\n", file=sys.stderr)
        return 3
    except StepTimeout as exc:  # what was slow, said once; diagnostics (if any) were saved by run_all
        print(f"\n`e2e {opts.step}` stopped: {exc}\n", file=sys.stderr)
        return 4
