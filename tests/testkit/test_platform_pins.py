"""fixtures/platform.yaml is the one home of the pinned versions: the CRDs vendored for offline
validation are the releases the platform installs, and what reads the pins reads that file."""

from __future__ import annotations

import hashlib
import re
import tomllib

import pytest
import yaml

from testkit import kind, tools
from testkit.chart import schemas
from testkit.paths import DOCS, REPO_ROOT
from testkit.platform import platform

PLATFORM = platform()
KIND_DOC = DOCS / "kind.md"
OPERATIONS_DOC = DOCS / "operations.md"


CHART_CRDS = [c for c in PLATFORM.crds if c.chart]
BUNDLE_CRDS = [c for c in PLATFORM.crds if c.bundle]


def test_every_vendored_crd_names_what_installs_it():
    assert [c.file for c in PLATFORM.crds if bool(c.chart) == bool(c.bundle)] == [], (
        "each CRD entry names either the platform chart or the bundle that installs it"
    )
    assert {c.bundle for c in BUNDLE_CRDS} <= {"gateway-api"}


@pytest.mark.parametrize("crd", BUNDLE_CRDS, ids=[c.file for c in BUNDLE_CRDS])
def test_vendored_gateway_api_crd_is_the_release_and_file_the_tier_applies(crd):
    bundle = PLATFORM.exposure.gateway_api
    assert crd.tag == bundle.version, f"{crd.file} is vendored from {crd.tag}, the kind tier applies {bundle.version}"
    assert bundle.files.get(crd.file) == crd.sha256, f"{crd.file}: exposure.gatewayApi records another digest"
    assert crd.path == f"config/crd/{bundle.channel}/{crd.file}"
    annotations = yaml.safe_load((schemas.CRD_DIR / crd.file).read_text())["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/bundle-version"] == crd.tag
    assert annotations["gateway.networking.k8s.io/channel"] == bundle.channel


@pytest.mark.parametrize("crd", CHART_CRDS, ids=[c.file for c in CHART_CRDS])
def test_vendored_crd_is_the_release_its_platform_chart_installs(crd):
    chart = PLATFORM.chart(crd.chart)
    assert chart.app_version, f"platform chart {chart.name} needs appVersion: the release of the CRDs it installs"
    assert crd.tag.removeprefix("v") == chart.app_version.removeprefix("v"), (
        f"{crd.file} is vendored from {crd.tag}, but chart {chart.name} {chart.version} installs {chart.app_version}: "
        f"copy {crd.repository}/blob/v{chart.app_version.removeprefix('v')}/{crd.path} and record its sha256"
    )


@pytest.mark.parametrize("crd", PLATFORM.crds, ids=[c.file for c in PLATFORM.crds])
def test_vendored_crd_file_is_the_recorded_one(crd):
    data = (schemas.CRD_DIR / crd.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == crd.sha256, f"{crd.file} is not the file recorded from {crd.source}"
    doc = yaml.safe_load(data)
    stamped = doc["metadata"].get("annotations", {}).get("operator.prometheus.io/version")
    if stamped is not None:  # the Prometheus Operator stamps its release into its CRDs
        assert stamped == crd.tag.removeprefix("v"), f"{crd.file} says it is {stamped}, recorded as {crd.tag}"


def test_every_vendored_crd_is_recorded():
    files = sorted(p.name for p in schemas.CRD_DIR.glob("*.yaml"))
    assert files == sorted(c.file for c in PLATFORM.crds)


def test_tools_and_schemas_read_their_pins_from_the_platform_file():
    raw = yaml.safe_load((REPO_ROOT / "fixtures" / "platform.yaml").read_text())
    assert (tools.WHEEL_REQUIREMENT, tools.WHEEL_SHA256, tools.RENDER_HELM_VERSION) == (
        raw["tools"]["renderWheel"]["requirement"],
        raw["tools"]["renderWheel"]["sha256"],
        raw["tools"]["renderWheel"]["helm"],
    )
    assert (tools.HELM_VERSION, tools.KUBECTL_VERSION) == (
        raw["tools"]["helm"]["version"],
        raw["tools"]["kubectl"]["version"],
    )
    assert kind.RELEASE.version == raw["kind"]["version"] and kind.RELEASE.sha256 == raw["kind"]["sha256"]
    assert schemas.KUBE_VERSION == str(raw["kubernetesVersion"])


def _documented_pins() -> dict[str, str]:
    """The 'Pinned versions' table of docs/kind.md: first column -> second column."""
    text = KIND_DOC.read_text().split("## Pinned versions", 1)[1]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", text, re.MULTILINE)
    return {name: version for name, version in rows if name not in ("what", "---")}


def test_documented_pinned_versions_are_the_platform_file_s():
    pins = _documented_pins()
    assert pins["kind"] == PLATFORM.kind_version
    assert pins["helm"].split()[0] == PLATFORM.tools.helm.version.removeprefix("v")
    assert f"{PLATFORM.tools.render_helm.removeprefix('v')} for the render tiers" in pins["helm"]
    assert pins["kubectl"].split()[0].rstrip(",") == PLATFORM.tools.kubectl.version.removeprefix("v")
    for chart in PLATFORM.charts:
        cell = pins[{"cnpg": "cloudnative-pg"}.get(chart.name, chart.name)]
        assert cell.split()[0].rstrip(",") == chart.version, (
            f"docs/kind.md pins {chart.name} at {cell}, platform.yaml at {chart.version}"
        )
    controller = PLATFORM.exposure.controller
    assert pins[controller.name].split()[0] == controller.version
    assert f"Traefik {controller.app_version}" in pins[controller.name]
    assert pins["gateway-api"].split(",")[0] == PLATFORM.exposure.gateway_api.version
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    kind_plugin = next(r for r in extras["kind"] if r.startswith("pytest-kind-ng=="))
    assert f"`pytest-kind-ng` {kind_plugin.split('==')[1]} " in KIND_DOC.read_text()


def test_upgrade_note_gives_the_values_platform_yaml_pins_for_the_previous_release():
    """docs/operations.md "Upgrades" shows the values the upgrade tests use: platform.yaml is their one home."""
    previous = PLATFORM.previous_release
    section = OPERATIONS_DOC.read_text().split("\n## Upgrades", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert yaml.safe_load(block) == previous.upgrade_values
    assert f"`{previous.ref[:7]}`" in section, "docs/operations.md names another previous release"
