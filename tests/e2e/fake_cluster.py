"""A stand-in for kubectl and helm, backed by a JSON file: enough cluster for the live tests' glue.

`tests/e2e/test_live_glue.py` runs e2e/test_netpol.py and e2e/test_cluster_toggles.py
with `--target kind` against it, so every kubectl and helm call of those modules
(apply on stdin, gets, waits, exec of the probe program, port-forwards, helm
upgrade/uninstall/get values, deletes, diagnostics) is made with its real arguments
and answered. It is not a cluster:

* an exec of the probe program is answered by the NetworkPolicy model on the stored
  policies (an ideal network plugin), unless FAKE_ENFORCE=0 (a plugin that ignores
  policy) or FAKE_LEAK names a cell the plugin gets wrong
  (`<source pod>-><target ip>:<port>`, `;`-separated);
* `helm upgrade --install` renders the chart with the real helm (`helm template`, the
  same chart directory and values files) and stores the objects, one Running pod per
  Deployment; an HPA reports it can scale;
* a port-forward to a pod answers HTTP: /metrics with Prometheus text on a port the
  pod declares (FAKE_METRICS=none: 404 everywhere).

    FAKE_CLUSTER_STATE  the JSON state file (objects, helm values)
    FAKE_REAL_HELM      the real helm, for `template` and everything the fake does not answer
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
KINDS = {
    "namespace": "Namespace",
    "namespaces": "Namespace",
    "pod": "Pod",
    "pods": "Pod",
    "configmap": "ConfigMap",
    "configmaps": "ConfigMap",
    "service": "Service",
    "services": "Service",
    "secret": "Secret",
    "networkpolicies": "NetworkPolicy",
    "networkpolicy": "NetworkPolicy",
    "serviceaccount": "ServiceAccount",
    "endpointslices": "EndpointSlice",
    "deployments": "Deployment",
    "servicemonitors.monitoring.coreos.com": "ServiceMonitor",
    "podmonitors.monitoring.coreos.com": "PodMonitor",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "horizontalpodautoscaler": "HorizontalPodAutoscaler",
}
METRICS = "# HELP bpom_ingest_requests_total Ingest requests\n# TYPE bpom_ingest_requests_total counter\n"


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
    return [
        o
        for o in state["objects"]
        if o["kind"] == kind
        and (namespace is None or meta(o).get("namespace") == namespace)
        and (name is None or meta(o)["name"] == name)
    ]


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
        ready = not any("never-ready" in json.dumps(c.get("readinessProbe", {})) for c in obj["spec"]["containers"])
        obj["status"] = {
            "phase": "Running",
            "podIP": f"10.244.9.{state['serial'] % 250 + 1}",
            "containerStatuses": [
                {"name": c["name"], "ready": ready, "restartCount": 0, "state": {"running": {}}}
                for c in obj["spec"]["containers"]
            ],
        }
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
        pods = [
            p
            for p in find(state, "Pod", namespace)
            if all(meta(p).get("labels", {}).get(k) == v for k, v in selector.items())
        ]
        slices.append(
            {
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{meta(svc)['name']}-x",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": meta(svc)["name"]},
                },
                "endpoints": [
                    {
                        "addresses": [p["status"]["podIP"]],
                        "targetRef": {"kind": "Pod", "name": meta(p)["name"]},
                        "conditions": {"ready": all(c["ready"] for c in p["status"]["containerStatuses"])},
                    }
                    for p in pods
                ],
            }
        )
    return slices


# --- exec: the probe program, answered by the model -----------------------------------------------------


def decide(state, pod, host: str, port: int, protocol: str) -> bool:
    from testkit.netpol.model import ContainerPort, External, Layout, Namespace, Pod
    from testkit.netpol.model import decide as model_decide

    namespaces = [Namespace(meta(n)["name"], meta(n).get("labels", {})) for n in find(state, "Namespace")]
    pods, target = [], None
    for p in find(state, "Pod"):
        ports = [
            ContainerPort(cp["containerPort"], cp.get("protocol", "TCP"), cp.get("name", ""))
            for c in p["spec"]["containers"]
            for cp in c.get("ports", [])
        ]
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
    return (
        12,
        f"bpom-probe result=timeout target={target} detail=timed out after 3.00s\n",
        "command terminated with exit code 12",
    )


# --- the commands -------------------------------------------------------------------------------------


def option(args, name):
    return args[args.index(name) + 1] if name in args else None


def port_forward(args):
    """Listen on the local port; a pod target answers HTTP (/metrics on a declared port), a Service just accepts."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    local, _, remote = args[-1].partition(":")
    target, namespace = args[-2], option(args, "--namespace")
    with locked_state(False) as state:
        pods = find(state, "Pod", namespace, target.split("/", 1)[1]) if target.startswith("pod/") else []
    declared = {str(cp["containerPort"]) for p in pods for c in p["spec"]["containers"] for cp in c.get("ports", [])}
    serves = bool(pods) and remote in declared and os.environ.get("FAKE_METRICS") != "none"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = serves and self.path == "/metrics"
            body = (METRICS if ok else "not found\n").encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    HTTPServer(("127.0.0.1", int(local)), Handler).serve_forever()


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
            return exec_probe(state, namespace, args[3], args[args.index("--") + 1 :])
    if verb == "delete":
        with locked_state(True) as state:
            kind, name = KINDS.get(args[1], args[1]), None if args[2].startswith("-") else args[2]
            before = len(state["objects"])
            state["objects"] = [
                o
                for o in state["objects"]
                if not (
                    o["kind"] == kind
                    and (namespace is None or meta(o).get("namespace") == namespace)
                    and (name is None or meta(o)["name"] == name)
                    and matches(selector, meta(o).get("labels", {}))
                )
            ]
            if kind == "Namespace":
                state["objects"] = [o for o in state["objects"] if meta(o).get("namespace") != name]
            if kind == "ConfigMap":  # garbage collection of what the ConfigMap owned
                state["objects"] = [
                    o
                    for o in state["objects"]
                    if not any(r.get("name") == name for r in meta(o).get("ownerReferences", []))
                ]
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


def helm_install(args: list[str]) -> int:
    """`upgrade --install REL CHART ...`: render with the real helm, store the objects, run the Deployments."""
    import subprocess

    import yaml

    release, chart = args[2], args[3]
    namespace = option(args, "--namespace")
    values = [args[i + 1] for i, a in enumerate(args) if a == "--values"]
    argv = [
        os.environ["FAKE_REAL_HELM"],
        "template",
        release,
        chart,
        "--namespace",
        namespace,
        "--api-versions",
        "monitoring.coreos.com/v1",
    ]
    for path in values:
        argv += ["--values", path]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    with locked_state(True) as state:
        if not find(state, "Namespace", name=namespace):
            state["objects"].append(
                admit(state, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            )
        for obj in filter(None, yaml.safe_load_all(proc.stdout)):
            meta(obj).setdefault("namespace", namespace)
            if obj["kind"] == "HorizontalPodAutoscaler":
                obj["status"] = {
                    "conditions": [
                        {"type": "AbleToScale", "status": "True"},
                        {"type": "ScalingActive", "status": "True"},
                    ]
                }
            state["objects"].append(admit(state, obj))
            if obj["kind"] == "Deployment":
                template = obj["spec"]["template"]
                state["objects"].append(
                    admit(
                        state,
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {
                                "name": f"{meta(obj)['name']}-5d9f8-x2x2x",
                                "namespace": namespace,
                                "labels": dict(template["metadata"].get("labels") or {}),
                            },
                            "spec": template["spec"],
                        },
                    )
                )
    return 0


def helm_uninstall(args: list[str]) -> int:
    release, namespace = args[1], option(args, "--namespace")
    with locked_state(True) as state:
        state["objects"] = [
            o
            for o in state["objects"]
            if not (
                meta(o).get("namespace") == namespace
                and meta(o).get("labels", {}).get("app.kubernetes.io/instance") == release
            )
        ]
    return 0


def helm(args: list[str]) -> None:
    if args and args[0] == "--kubeconfig":
        args = args[2:]
    if args[:2] == ["get", "values"]:
        with locked_state(False) as state:
            print(json.dumps(state["helm_values"]))
        sys.exit(0)
    if args[:2] == ["upgrade", "--install"]:
        sys.exit(helm_install(args))
    if args[:1] == ["uninstall"]:
        sys.exit(helm_uninstall(args))
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
