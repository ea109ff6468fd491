"""Diagnostics: the commands run per namespace and the files they land in."""

import json
import sys
from pathlib import Path

from e2e.lib import diagnostics
from testkit.kube import Kubectl

PODS = {
    "items": [
        {
            "metadata": {"name": "api-0"},
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "api"}, {"name": "sidecar"}]},
            "status": {
                "containerStatuses": [{"name": "api", "restartCount": 2}, {"name": "sidecar", "restartCount": 0}],
                "initContainerStatuses": [{"name": "migrate", "restartCount": 0}],
            },
        }
    ]
}


def fake_kubectl(tmp_path: Path) -> Path:
    """A kubectl that answers `get pods -o json` with PODS and echoes any other command."""
    script = tmp_path / "kubectl"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
if "get" in args and "pods" in args and "json" in args:
    print(json.dumps({json.dumps(PODS)!s}))
elif "describe" in args and "jobs" in args:
    print("error: boom", file=sys.stderr); sys.exit(1)
else:
    print("ran: " + " ".join(args))
""")
    script.chmod(0o755)
    return script


def test_log_commands_cover_every_container_and_previous_logs():
    kubectl = Kubectl(Path("kubectl"))
    outputs = [str(c.output) for c in diagnostics.log_commands(kubectl, "ns", PODS)]
    assert outputs == [
        "namespaces/ns/logs/api-0/migrate.log",
        "namespaces/ns/logs/api-0/api.log",
        "namespaces/ns/logs/api-0/api.previous.log",
        "namespaces/ns/logs/api-0/sidecar.log",
    ]


def test_namespace_commands_ask_the_namespace_with_the_kubeconfig(tmp_path):
    kubectl = Kubectl(fake_kubectl(tmp_path), Path("/k/config"))
    commands = diagnostics.namespace_commands(kubectl, "ns")
    assert {str(c.output) for c in commands} >= {
        "namespaces/ns/events.txt",
        "namespaces/ns/describe-pods.txt",
        "namespaces/ns/resources.txt",
    }
    collector = diagnostics.Collector(tmp_path / "out")
    code, _ = collector.run(commands[0])
    said = (tmp_path / "out" / commands[0].output).read_text().split()
    assert code == 0 and said[:3] == ["ran:", "--kubeconfig", "/k/config"]
    assert said[3:5] == ["get", "events"] and said[said.index("--namespace") + 1] == "ns"


def test_collect_cluster_writes_one_folder_and_survives_failing_commands(tmp_path):
    kubectl = Kubectl(fake_kubectl(tmp_path), tmp_path / "config")
    dest = tmp_path / "artifacts" / "r1" / "flow"
    index = diagnostics.collect_cluster(kubectl, ["bp-openmeter-e2e", "nats-system"], dest)
    for ns in ("bp-openmeter-e2e", "nats-system"):
        assert (dest / "namespaces" / ns / "events.txt").read_text().startswith("ran: --kubeconfig")
        assert (dest / "namespaces" / ns / "logs" / "api-0" / "api.previous.log").exists()
        assert "error: boom" in (dest / "namespaces" / ns / "describe-jobs.txt").read_text()
    assert (dest / "cluster" / "nodes.txt").exists()
    lines = index.read_text().splitlines()
    assert any(line.strip().startswith("1") and "describe-jobs" in line for line in lines)


def test_collect_local_copies_logs_of_a_kubeconfig_less_run(tmp_path):
    root = tmp_path / "stack"
    (root / "postgres").mkdir(parents=True)
    (root / "postgres" / "postgres.log").write_text("pg says hi\n")
    (root / "engine").mkdir()
    (root / "engine" / "api.log").write_text('{"level":"error"}\n')

    class Stack:
        def log_files(self):
            return {"sink": root / "engine" / "sink.log"}  # reported but missing

    found = diagnostics.local_log_files(root, Stack())
    assert set(found) == {"sink", "postgres-postgres", "engine-api"}
    copied = diagnostics.collect_local(found, tmp_path / "artifacts" / "r1" / "tests")
    local = tmp_path / "artifacts" / "r1" / "tests" / "local"
    assert (local / "engine-api.log").read_text() == '{"level":"error"}\n'
    assert "sink: " in (local / "index.txt").read_text() and "(missing)" in (local / "index.txt").read_text()
    assert len(copied) == 2


def test_artifacts_dir_is_per_run():
    assert diagnostics.artifacts_dir("r1", Path("/x")) == Path("/x/r1")
