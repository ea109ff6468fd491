"""The kind tier's lifecycle with stand-in kind, kubectl and helm: what a failure leaves and saves.

The stand-ins record every call (tests/e2e/recording_tool.py); `kind create cluster`
fails the way it does when a node never becomes ready, so the flow must still save
diagnostics, export the nodes' logs and delete what it created.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from e2e.lib import flow
from e2e.lib.options import env_flag, parse
from testkit.downloads import host_platform
from testkit.kind import KindError
from testkit.kube import KubeError
from testkit.tools import HELM_VERSION, KUBECTL_VERSION, helm_version, kubectl_version
from tests.e2e.recording_tool import recording_tool

KIND = """
if args == ["version"]:
    print("kind v0.33.0 go1.26.7 linux/amd64")
elif args[:2] == ["get", "clusters"]:
    print("")
elif args[:2] == ["create", "cluster"]:
    print("ERROR: failed to create cluster: timed out waiting for the control plane", file=sys.stderr)
    sys.exit(1)
elif args[:2] == ["export", "logs"]:
    os.makedirs(os.path.join(args[2], "bp-openmeter-e2e-worker"), exist_ok=True)
    open(os.path.join(args[2], "bp-openmeter-e2e-worker", "kubelet.log"), "w").write("kubelet said why\\n")
    print("Exported logs to: " + args[2])
"""
KUBECTL = f"""
if args[:2] == ["version", "--client"]:
    print(json.dumps({{"clientVersion": {{"gitVersion": "{KUBECTL_VERSION}"}}}}))
else:
    print("The connection to the server was refused", file=sys.stderr)
    sys.exit(1)
"""
HELM = f"""
if args[:1] == ["version"]:
    print("{HELM_VERSION} v1.36")
"""


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    helm_version.cache_clear()
    kubectl_version.cache_clear()
    bin_dir = tmp_path / "bin"
    tools = {
        name: recording_tool(bin_dir, name, "import sys, os, json\n" + script)
        for name, script in (("kind", KIND), ("kubectl", KUBECTL), ("helm", HELM))
    }
    for name, tool in tools.items():
        monkeypatch.setenv(f"BPOM_{name.upper()}", str(tool.path))
    return tools


def _plan(tmp_path: Path, *argv: str) -> flow.Plan:
    return flow.make_plan(parse(["all", "--run-id", "rlife", "--artifacts-dir", str(tmp_path / "artifacts"), *argv]))


def _verbs(tool) -> list[list[str]]:
    return [c["argv"][:2] for c in tool.calls() if c["argv"] != ["version"]]


def test_a_cluster_whose_creation_fails_is_saved_then_deleted(tmp_path, stand_ins):
    plan = _plan(tmp_path)
    with pytest.raises(Exception, match="timed out waiting for the control plane"):
        flow.run_all(plan)
    kind_calls = [c["argv"] for c in stand_ins["kind"].calls()]
    create = next(a for a in kind_calls if a[:2] == ["create", "cluster"])
    assert "--retain" in create, "a failed creation keeps its nodes, so their logs can be exported"
    assert create[create.index("--name") + 1] == plan.cluster_name
    dest = plan.artifacts / "flow"
    export = next(a for a in kind_calls if a[:2] == ["export", "logs"])
    assert export == ["export", "logs", str(dest / "kind-logs"), "--name", plan.cluster_name]
    assert (dest / "kind-logs" / "bp-openmeter-e2e-worker" / "kubelet.log").is_file()
    assert "kind-export-logs.txt" in (dest / "commands.txt").read_text()
    assert (dest / "cluster" / "nodes.txt").is_file(), "kubectl diagnostics ran too (each command's error saved)"
    assert kind_calls[-1][:4] == ["delete", "cluster", "--name", plan.cluster_name], "nothing is leaked"


def test_a_failed_creation_is_kept_when_asked(tmp_path, stand_ins):
    with pytest.raises(Exception, match="timed out"):
        flow.run_all(_plan(tmp_path, "--keep-cluster"))
    assert ["delete", "cluster"] not in _verbs(stand_ins["kind"])
    assert ["export", "logs"] in _verbs(stand_ins["kind"])


def test_a_given_cluster_is_never_deleted_and_has_no_kind_logs(tmp_path, stand_ins):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({"apiVersion": "v1", "kind": "Config"}))
    plan = _plan(tmp_path, "--kubeconfig", str(kubeconfig), "--engine-image", "reg/bpom:1")
    with pytest.raises(KubeError):  # the databases step cannot reach the (stand-in) API server
        flow.run_all(plan)
    assert _verbs(stand_ins["kind"]) == []
    assert (plan.artifacts / "flow" / "commands.txt").is_file()


# A kind that keeps its clusters (name -> images loaded) in a file beside it, and reads its
# options as kind does (in any order): a test checks what the clusters became.
KIND_WITH_CLUSTERS = """
import argparse
state = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "clusters.json")
clusters = json.load(open(state)) if os.path.exists(state) else {"bp-openmeter-e2e": []}
parser = argparse.ArgumentParser(add_help=False)
parser.add_argument("words", nargs="*")
parser.add_argument("--name", default="kind")
parser.add_argument("--kubeconfig")
options = parser.parse_intermixed_args(args)
if options.words == ["version"]:
    print("kind v0.33.0 go1.26.7 linux/amd64")
elif options.words == ["get", "clusters"]:
    print("\\n".join(clusters))
elif options.name not in clusters:
    print(f"ERROR: unknown cluster {options.name!r}", file=sys.stderr)
    sys.exit(1)
elif options.words == ["export", "kubeconfig"]:
    open(options.kubeconfig, "w").write(f"current-context: kind-{options.name}\\n")
elif options.words[:2] == ["load", "docker-image"]:
    clusters[options.name] += options.words[2:]
elif options.words == ["delete", "cluster"]:
    del clusters[options.name]
    if os.path.exists(options.kubeconfig):
        os.remove(options.kubeconfig)
else:
    print(f"ERROR: not a command of this stand-in: {args}", file=sys.stderr)
    sys.exit(2)
json.dump(clusters, open(state, "w"))
"""


def test_a_reused_cluster_gets_its_kubeconfig_written_again(tmp_path, stand_ins):
    kind = recording_tool(tmp_path / "bin2", "kind", "import argparse, json, os, sys\n" + KIND_WITH_CLUSTERS)
    from testkit.kind import Cluster

    def clusters() -> dict[str, list[str]]:
        return json.loads((tmp_path / "bin2" / "clusters.json").read_text())

    kubeconfig = tmp_path / "kc" / "kubeconfig"
    cluster = Cluster("bp-openmeter-e2e", kind.path, Path("kubectl"), kubeconfig=kubeconfig)
    assert cluster.create(tmp_path / "kind.yaml") == kubeconfig.resolve()
    assert kubeconfig.read_text() == "current-context: kind-bp-openmeter-e2e\n"  # written again, not created
    assert not [c for c in kind.calls() if c["argv"][:2] == ["create", "cluster"]]
    cluster.load_image("bp-openmeter:e2e-0123456789ab")
    assert clusters() == {"bp-openmeter-e2e": ["bp-openmeter:e2e-0123456789ab"]}
    cluster.delete()
    assert clusters() == {} and not kubeconfig.exists()  # its kubeconfig entry goes with it


@pytest.mark.parametrize(
    ("raw", "value"), [("", False), ("0", False), ("false", False), ("No", False), ("1", True), ("TRUE", True)]
)
def test_yes_no_variables_mean_what_they_say(raw, value):
    assert env_flag("BPOM_E2E_KEEP_CLUSTER", {"BPOM_E2E_KEEP_CLUSTER": raw}) is value


def test_keep_cluster_zero_does_not_keep_it(monkeypatch):
    monkeypatch.setenv("BPOM_E2E_KEEP_CLUSTER", "0")
    assert parse(["all"]).keep_cluster is False
    monkeypatch.setenv("BPOM_E2E_KEEP_CLUSTER", "maybe")
    with pytest.raises(SystemExit, match="BPOM_E2E_KEEP_CLUSTER='maybe'"):
        parse(["all"])


# --- loading the engine image: kind's own path, and its fallback where that fails -----------------

# kind imports with `ctr images import --all-platforms`; under Docker 29's containerd image store an
# image whose other platforms' blobs are not local fails there (kind issue 3795).
KIND_LOAD = """
import sys
if args[:2] == ["load", "docker-image"]:
    if os.environ.get("DIRECT_LOAD_WORKS"):
        sys.exit(0)
    print('ERROR: failed to load image: command "docker exec --privileged -i bpom-control-plane ctr '
          '--namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -" failed with '
          'error: exit status 1', file=sys.stderr)
    print("ctr: content digest sha256:4f2b0a1c: not found", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["load", "image-archive"]:
    archive = args[2]
    # what the nodes get is the file docker saved, there when kind reads it
    print("loaded " + open(archive).read())
    if os.environ.get("ARCHIVE_LOAD_FAILS"):
        print("ERROR: failed to load image archive: no space left on device", file=sys.stderr)
        sys.exit(1)
"""
DOCKER_SAVE = """
import sys
if args[:2] == ["image", "save"]:
    out = args[args.index("--output") + 1]
    open(out, "w").write("image " + args[-1] + " for " + args[args.index("--platform") + 1])
"""


@pytest.fixture
def loading(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    kind = recording_tool(bin_dir, "kind", "import os\n" + KIND_LOAD)
    docker = recording_tool(bin_dir, "docker", DOCKER_SAVE)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    from testkit.kind import Cluster

    cluster = Cluster("bpom", kind.path, Path("kubectl"), kubeconfig=tmp_path / "kubeconfig")
    return cluster, kind, docker


def test_an_image_kind_cannot_import_is_saved_for_the_nodes_platform_and_loaded_as_an_archive(tmp_path, loading):
    cluster, kind, docker = loading
    said = []
    cluster.load_image("bp-openmeter:e2e-0123456789ab", archive_dir=tmp_path / "archives", say=said.append)
    kind_calls = [c["argv"] for c in kind.calls()]
    (save,) = [c["argv"] for c in docker.calls()]
    assert kind_calls[0] == ["load", "docker-image", "--name", "bpom", "bp-openmeter:e2e-0123456789ab"]
    node_platform = f"linux/{host_platform()[1]}"
    assert save[:2] == ["image", "save"] and save[-1] == "bp-openmeter:e2e-0123456789ab"
    assert save[save.index("--platform") + 1] == node_platform, "only the nodes' platform: its blobs are all local"
    archive = save[save.index("--output") + 1]
    assert kind_calls[1] == ["load", "image-archive", archive, "--name", "bpom"]
    assert len(kind_calls) == 2
    assert not Path(archive).exists(), "the archive is removed once loaded"
    assert "content digest" in said[0] and "image-archive" in said[0], said


def test_when_the_fallback_fails_too_both_reasons_are_given(tmp_path, loading, monkeypatch):
    cluster, kind, docker = loading
    monkeypatch.setenv("ARCHIVE_LOAD_FAILS", "1")
    with pytest.raises(KindError) as info:
        cluster.load_image("bp-openmeter:e2e-0123456789ab", archive_dir=tmp_path / "archives")
    assert "content digest sha256:4f2b0a1c: not found" in str(info.value)
    assert "no space left on device" in str(info.value)
    assert not any((tmp_path / "archives").iterdir()), "no archive left behind"


def test_an_image_kind_imports_needs_no_archive(tmp_path, loading, monkeypatch):
    cluster, kind, docker = loading
    monkeypatch.setenv("DIRECT_LOAD_WORKS", "1")
    cluster.load_image("bp-openmeter:e2e-0123456789ab", archive_dir=tmp_path / "archives")
    assert [c["argv"][:2] for c in kind.calls()] == [["load", "docker-image"]]
    assert docker.calls() == []
