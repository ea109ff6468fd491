"""A stand-in for kubectl and helm, backed by a JSON file: enough cluster for the NetworkPolicy test's glue.

`tests/suite/test_netpol_glue.py` runs e2e/test_netpol.py with `--target kind`
against it, so every kubectl and helm call of the test module (apply on stdin, gets,
waits, exec of the probe program, port-forward, deletes, diagnostics) is made and
answered. It is not a cluster: an exec of the probe program is answered by the
NetworkPolicy model on the stored policies (an ideal network plugin), unless
FAKE_ENFORCE=0 (a plugin that ignores policy) or FAKE_LEAK names a cell the
plugin gets wrong (`<source pod>-><target ip>:<port>`).

    FAKE_CLUSTER_STATE  the JSON state file (objects, helm values)
    FAKE_REAL_HELM      the real helm, for everything but `helm get values`
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
KINDS = {"namespace": "Namespace", "namespaces": "Namespace", "pod": "Pod", "pods": "Pod",
         "configmap": "ConfigMap", "configmaps": "ConfigMap", "service": "Service", "services": "Service",
         "secret": "Secret", "networkpolicies": "NetworkPolicy", "networkpolicy": "NetworkPolicy",
         "serviceaccount": "ServiceAccount", "endpointslices": "EndpointSlice"}


# --- state ---------------------------------------------------------------------------------------

@contextmanager
def locked_state(write: bool):
    path = Path(os.environ["FAKE_CLUSTER_STATE"])
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text())
        yield state
        if write:
            path.write_text(json.dumps(state, indent=1))


def meta(obj):
    return obj.setdefault("metadata", {})


def find(state, kind, namespace=None, name=None):
    return [o for o in state["objects"] if o["kind"] == kind
            and (namespace is None or meta(o).get("namespace") == namespace)
            and (name is None or meta(o)["name"] == name)]


def matches(selector: str | None, labels: dict) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, sep, value = term.partition("=")
        if sep and labels.get(key) != value:
            return False
        if not sep and key not in labels:
            return False
    return True


def admit(state, obj):
    """What the API server and the controllers would add: uid, namespace label, pod status."""
    m = meta(obj)
    state["serial"] += 1
    m.setdefault("uid", f"00000000-0000-4000-8000-{state['serial']:012d}")
    if obj["kind"] == "Namespace":
        m.setdefault("labels", {})[NAMESPACE_LABEL] = m["name"]
    if obj["kind"] == "Pod":
        ready = not any("never-ready" in json.dumps(c.get("readinessProbe", {}))
                        for c in obj["spec"]["containers"])
        obj["status"] = {"phase": "Running", "podIP": f"10.244.9.{state['serial'] % 250 + 1}",
                         "containerStatuses": [{"name": c["name"], "ready": ready, "restartCount": 0,
                                                "state": {"running": {}}} for c in obj["spec"]["containers"]]}
    return obj


def apply(state, stdin: str):
    doc = json.loads(stdin)
    for obj in doc.get("items", [doc]):
        m = meta(obj)
        if obj["kind"] != "Namespace" and not find(state, "Namespace", name=m.get("namespace")):
            return 1, "", f'Error from server (NotFound): namespaces "{m.get("namespace")}" not found'
        existing = find(state, obj["kind"], m.get("namespace"), m["name"])
        if existing:
            existing[0].update({k: v for k, v in obj.items() if k != "metadata"})
        else:
            state["objects"].append(admit(state, obj))
    return 0, "applied\n", ""


def endpoint_slices(state, namespace):
    slices = [o for o in find(state, "EndpointSlice", namespace)]
    for svc in find(state, "Service", namespace):
        selector = svc["spec"].get("selector") or {}
        pods = [p for p in find(state, "Pod", namespace)
                if all(meta(p).get("labels", {}).get(k) == v for k, v in selector.items())]
        slices.append({"kind": "EndpointSlice", "metadata": {
            "name": f"{meta(svc)['name']}-x", "namespace": namespace,
            "labels": {"kubernetes.io/service-name": meta(svc)["name"]}},
            "endpoints": [{"addresses": [p["status"]["podIP"]], "targetRef": {"kind": "Pod", "name": meta(p)["name"]},
                           "conditions": {"ready": all(c["ready"] for c in p["status"]["containerStatuses"])}}
                          for p in pods]})
    return slices


# --- exec: the probe program, answered by the model -----------------------------------------------------

def decide(state, pod, host: str, port: int, protocol: str) -> bool:
    from e2e.lib.netpol_model import ContainerPort, External, Layout, Namespace, Pod, decide as model_decide

    namespaces = [Namespace(meta(n)["name"], meta(n).get("labels", {})) for n in find(state, "Namespace")]
    pods, target = [], None
    for p in find(state, "Pod"):
        ports = [ContainerPort(cp["containerPort"], cp.get("protocol", "TCP"), cp.get("name", ""))
                 for c in p["spec"]["containers"] for cp in c.get("ports", [])]
        name = f"{meta(p)['namespace']}/{meta(p)['name']}"
        pods.append(Pod(name, meta(p)["namespace"], meta(p).get("labels", {}), ports))
        if p["status"].get("podIP") == host:
            target = name
    externals = []
    if target is None:
        externals = [External("external", host, [ContainerPort(port, protocol)])]
        target = "external"
    layout = Layout(namespaces, pods, externals)
    policies = find(state, "NetworkPolicy")
    source = f"{meta(pod)['namespace']}/{meta(pod)['name']}"
    return model_decide(policies, layout, source, target, port, protocol).allowed


def exec_probe(state, namespace: str, pod_name: str, command: list[str]):
    pods = find(state, "Pod", namespace, pod_name)
    if not pods:
        return 1, "", f'Error from server (NotFound): pods "{pod_name}" not found'
    if command[:3] != ["python3", "-B", "/probe/probe.py"]:
        return 126, "", "OCI runtime exec failed: executable file not found in $PATH"
    mode, host, port = command[3], command[4], int(command[5])
    protocol = "UDP" if mode == "dns-udp" else "TCP"
    allowed = True if os.environ.get("FAKE_ENFORCE") == "0" else decide(state, pods[0], host, port, protocol)
    if f"{pod_name}->{host}:{port}" in os.environ.get("FAKE_LEAK", "").split(";"):
        allowed = not allowed
    target = f"{host}:{port}/{protocol}"
    if allowed:
        return 0, f"bpom-probe result=allowed target={target} detail=fake plugin let it through\n", ""
    return 12, f"bpom-probe result=timeout target={target} detail=timed out after 3.00s\n", \
        "command terminated with exit code 12"


# --- the commands -------------------------------------------------------------------------------------

def option(args, name):
    return args[args.index(name) + 1] if name in args else None


def port_forward(args):
    local = int(args[-1].split(":")[0])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", local))
    srv.listen(8)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = srv.accept()
        conn.close()


def kubectl(args: list[str], stdin: str) -> tuple[int, str, str]:
    if args and args[0] == "--kubeconfig":
        args = args[2:]
    verb = args[0]
    namespace = option(args, "--namespace")
    selector = option(args, "--selector")
    if verb == "port-forward":
        port_forward(args)
    if verb == "apply":
        with locked_state(True) as state:
            return apply(state, stdin)
    if verb == "exec":
        with locked_state(False) as state:
            return exec_probe(state, namespace, args[3], args[args.index("--") + 1:])
    if verb == "delete":
        with locked_state(True) as state:
            kind, name = KINDS.get(args[1], args[1]), None if args[2].startswith("-") else args[2]
            before = len(state["objects"])
            state["objects"] = [o for o in state["objects"] if not (
                o["kind"] == kind and (namespace is None or meta(o).get("namespace") == namespace)
                and (name is None or meta(o)["name"] == name) and matches(selector, meta(o).get("labels", {})))]
            if kind == "Namespace":
                state["objects"] = [o for o in state["objects"] if meta(o).get("namespace") != name]
            if kind == "ConfigMap":   # garbage collection of what the ConfigMap owned
                state["objects"] = [o for o in state["objects"] if not any(
                    r.get("name") == name for r in meta(o).get("ownerReferences", []))]
            return 0, f"deleted {before - len(state['objects'])}\n", ""
    if verb != "get":
        return 0, f"fake: {' '.join(args)}\n", ""
    with locked_state(False) as state:
        kind = KINDS.get(args[1])
        name = args[2] if len(args) > 2 and not args[2].startswith("-") else None
        if kind == "ServiceAccount":
            ok = bool(find(state, "Namespace", name=namespace))
            return (0, "default\n", "") if ok else (1, "", "NotFound")
        if kind == "EndpointSlice":
            items = [s for s in endpoint_slices(state, namespace) if matches(selector, meta(s).get("labels", {}))]
        elif kind is None:
            items = []
        else:
            scope = None if "--all-namespaces" in args or kind == "Namespace" else namespace
            items = [o for o in find(state, kind, scope, name) if matches(selector, meta(o).get("labels", {}))]
        if name is not None:
            if not items:
                return 1, "", f'Error from server (NotFound): {args[1]} "{name}" not found'
            return 0, json.dumps(items[0]), ""
        if "json" not in args:
            return 0, "\n".join(meta(o)["name"] for o in items) + "\n", ""
        return 0, json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), ""


def helm(args: list[str]) -> None:
    if "get" in args and "values" in args:
        with locked_state(False) as state:
            print(json.dumps(state["helm_values"]))
        sys.exit(0)
    real = os.environ["FAKE_REAL_HELM"]
    os.execv(real, [real, *args])


def main() -> None:
    tool = Path(sys.argv[0]).name
    if tool == "helm":
        helm(sys.argv[1:])
    stdin = sys.stdin.read() if not sys.stdin.isatty() and "apply" in sys.argv else ""
    code, out, err = kubectl(sys.argv[1:], stdin)
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)


if __name__ == "__main__":
    main()
