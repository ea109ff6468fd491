"""The kind tier's lifecycle with stand-in kind, kubectl and helm: what a failure leaves and saves.

The stand-ins record every call (tests/e2e/recording_tool.py); `kind create cluster`
fails the way it does when a node never becomes ready, so the flow must still save
diagnostics, export the nodes' logs and delete what it created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.lib import flow
from e2e.lib.options import env_flag, parse
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


def test_a_reused_cluster_gets_its_kubeconfig_written_again(tmp_path, stand_ins):
    kind = recording_tool(
        tmp_path / "bin2",
        "kind",
        'import sys\nif args == ["version"]: print("kind v0.33.0 go1.26.7 linux/amd64")\n'
        'elif args[:2] == ["get", "clusters"]: print("bp-openmeter-e2e")\n',
    )
    from testkit.kind import Cluster

    cluster = Cluster("bp-openmeter-e2e", kind.path, Path("kubectl"), kubeconfig=tmp_path / "kc" / "kubeconfig")
    assert cluster.create(tmp_path / "kind.yaml") == (tmp_path / "kc" / "kubeconfig").resolve()
    assert [c["argv"] for c in kind.calls()][-1] == [
        "export",
        "kubeconfig",
        "--name",
        "bp-openmeter-e2e",
        "--kubeconfig",
        str((tmp_path / "kc" / "kubeconfig").resolve()),
    ]
    cluster.load_image("bp-openmeter:e2e-0123456789ab")
    cluster.delete()
    assert [c["argv"] for c in kind.calls()][-2:] == [
        ["load", "docker-image", "--name", "bp-openmeter-e2e", "bp-openmeter:e2e-0123456789ab"],
        [
            "delete",
            "cluster",
            "--name",
            "bp-openmeter-e2e",
            "--kubeconfig",
            str((tmp_path / "kc" / "kubeconfig").resolve()),
        ],
    ]


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
