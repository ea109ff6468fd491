"""A stand-in for kubectl and helm, backed by a JSON file: enough cluster for the live tests' glue.

`tests/e2e/test_live_glue.py` runs e2e/test_netpol.py and e2e/test_cluster_toggles.py
with `--target kind` against it, so every kubectl and helm call of those modules
(apply on stdin, gets, waits, exec of the probe program, port-forwards, helm
upgrade/uninstall/get values, deletes, diagnostics) is made with its real arguments
and answered. It is not a cluster, and it is strict: a verb, resource kind or flag it
does not know fails the call (exit 2, naming it), so a call the live tests make that
it cannot answer faithfully is an error, never a silent success.

* An exec of the probe program is answered from the truth table written by hand
  (tests/e2e/expected_egress.txt), never from the NetworkPolicy model that computes
  the tests' expectation: a probe pod's component (its `bp-openmeter.e2e/probe`
  label) and the address it dials (a pod's IP, or the Kubernetes API's) name the
  cell. The canary's client is blocked once its namespace holds the canary's
  default-deny policy. A cell the table lacks is a probe error. FAKE_ENFORCE=0
  lets everything through (a plugin that ignores policy); FAKE_LEAK names cells
  the plugin gets wrong (`<source pod>-><target ip>:<port>`, `;`-separated).
* `helm upgrade --install` renders the chart with the real helm (`helm template`, the
  same chart directory and values files) and stores the objects, one Running pod per
  Deployment; an HPA reports it can scale. `helm template` and `helm version` run the
  real helm.
* A port-forward to a pod answers HTTP: /metrics with Prometheus text on a port the
  pod declares (FAKE_METRICS=none: 404 everywhere).

    FAKE_CLUSTER_STATE  the JSON state file (objects, helm values)
    FAKE_REAL_HELM      the real helm, for `template` and `version`
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from e2e.lib.canary import DENY_POLICY  # noqa: E402
from e2e.lib.probes import PROBE_LABEL  # noqa: E402
from testkit.netpol.truth_table import Key, Outcome, parse_table  # noqa: E402
from tests.e2e.netpol_capture import EXPECTED_EGRESS_FILE  # noqa: E402

KUBECTL_VERSION = {"clientVersion": {"major": "1", "minor": "35", "gitVersion": "v1.35.8"}}

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
    "deployment": "Deployment",
    "servicemonitors.monitoring.coreos.com": "ServiceMonitor",
    "podmonitors.monitoring.coreos.com": "PodMonitor",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "horizontalpodautoscaler": "HorizontalPodAutoscaler",
    "events": "Event",
    "nodes": "Node",
    "statefulsets": "StatefulSet",
    "jobs": "Job",
    "endpoints": "Endpoints",
    "persistentvolumeclaims": "PersistentVolumeClaim",
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
        if (kind is None or o["kind"] == kind)
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


# --- exec: the probe program, answered from the hand-written table ------------------------------------


class Unanswerable(Exception):
    """The stand-in has no faithful answer for this call."""


def written_egress():
    return parse_table(EXPECTED_EGRESS_FILE.read_text())


def target_name(state, host: str) -> str:
    """How the table names the address a probe dials: `<namespace>/<pod>`, or the Kubernetes API's."""
    for pod in find(state, "Pod"):
        if pod.get("status", {}).get("podIP") == host:
            return f"{meta(pod)['namespace']}/{meta(pod)['name']}"
    for item in find(state, "EndpointSlice", "default"):
        if any(host in e.get("addresses", []) for e in item.get("endpoints", [])):
            return f"kubernetes-api/{host}"
    raise Unanswerable(f"no pod and no API server has address {host}")


def allowed_by_the_table(state, pod, host: str, port: int, protocol: str) -> bool:
    namespace = meta(pod)["namespace"]
    if find(state, "NetworkPolicy", namespace, DENY_POLICY):
        return False  # the canary's namespace, once its default-deny policy exists
    role = meta(pod).get("labels", {}).get(PROBE_LABEL)
    if role == "canary":
        return True  # the canary, before its policy: the network works
    key = Key(role or meta(pod)["name"], target_name(state, host), port, protocol)
    written = written_egress()
    if key not in written:
        raise Unanswerable(f"{EXPECTED_EGRESS_FILE.name} has no cell {key}")
    return written[key] is Outcome.ALLOWED


def exec_probe(state, namespace: str, pod_name: str, command: list[str]):
    pods = find(state, "Pod", namespace, pod_name)
    if not pods:
        return 1, "", f'Error from server (NotFound): pods "{pod_name}" not found'
    if command[:3] != ["python3", "-B", "/probe/probe.py"]:
        return 126, "", "OCI runtime exec failed: executable file not found in $PATH"
    mode, host, port = command[3], command[4], int(command[5])
    protocol = "UDP" if mode == "dns-udp" else "TCP"
    target = f"{host}:{port}/{protocol}"
    try:
        allowed = (
            True
            if os.environ.get("FAKE_ENFORCE") == "0"
            else allowed_by_the_table(state, pods[0], host, port, protocol)
        )
    except Unanswerable as exc:
        return 15, f"bpom-probe result=error target={target} detail=stand-in: {exc}\n", ""
    if f"{pod_name}->{host}:{port}" in os.environ.get("FAKE_LEAK", "").split(";"):
        allowed = not allowed
    if allowed:
        return 0, f"bpom-probe result=allowed target={target} detail=stand-in plugin let it through\n", ""
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


class Refused(Exception):
    """A call the stand-in does not know: its verb, resource kind or arguments."""


def strict(prog: str, args: list[str], build) -> argparse.Namespace:
    """Parse `args` as `build` declares them; anything else is refused, never ignored."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False, exit_on_error=False)
    build(parser)
    try:
        parsed, unknown = parser.parse_known_intermixed_args(args)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise Refused(f"{prog}: cannot read {args}: {exc}") from exc
    if unknown:
        raise Refused(f"{prog}: unknown arguments {unknown}")
    return parsed


def kinds_of(words: str) -> list[str]:
    kinds = []
    for word in words.split(","):
        if word not in KINDS and word != "all":
            raise Refused(f"kubectl: unknown resource kind {word!r}")
        kinds.append(KINDS.get(word, "all"))
    return kinds


def _get_args(p):
    p.add_argument("kind")
    p.add_argument("name", nargs="?")
    p.add_argument("--namespace")
    p.add_argument("--selector")
    p.add_argument("--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=["json", "wide"])
    p.add_argument("--sort-by")


def _delete_args(p):
    p.add_argument("kind")
    p.add_argument("name", nargs="?")
    p.add_argument("--namespace")
    p.add_argument("--selector")
    p.add_argument("--ignore-not-found", action="store_true")
    p.add_argument("--wait", choices=["true"])
    p.add_argument("--timeout")


def _exec_args(p):
    p.add_argument("--namespace", required=True)
    p.add_argument("pod")
    p.add_argument("--container", required=True)


def _port_forward_args(p):
    p.add_argument("--namespace", required=True)
    p.add_argument("--address", choices=["127.0.0.1"], required=True)
    p.add_argument("target")
    p.add_argument("ports")


def _describe_args(p):
    p.add_argument("kind")
    p.add_argument("--namespace", required=True)


def _logs_args(p):
    p.add_argument("--namespace", required=True)
    p.add_argument("pod")
    p.add_argument("--container", required=True)
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("--previous", action="store_true")


def _version_args(p):
    p.add_argument("--client", action="store_true", required=True)
    p.add_argument("--output", choices=["json"], required=True)


def _apply_args(p):
    p.add_argument("--filename", choices=["-"], required=True)


def kubectl(args: list[str], stdin: str) -> tuple[int, str, str]:
    if args[:1] == ["--kubeconfig"]:
        args = args[2:]
    if not args:
        raise Refused("kubectl: no verb")
    verb, rest = args[0], args[1:]
    if verb == "version":
        strict("kubectl version", rest, _version_args)
        return 0, json.dumps(KUBECTL_VERSION), ""
    if verb == "port-forward":
        strict("kubectl port-forward", rest, _port_forward_args)
        port_forward(rest)
    if verb == "apply":
        strict("kubectl apply", rest, _apply_args)
        with locked_state(True) as state:
            return apply(state, stdin)
    if verb == "exec":
        if "--" not in rest:
            raise Refused("kubectl exec: no `--` before the command")
        split = rest.index("--")
        opts = strict("kubectl exec", rest[:split], _exec_args)
        with locked_state(False) as state:
            return exec_probe(state, opts.namespace, opts.pod, rest[split + 1 :])
    if verb == "delete":
        opts = strict("kubectl delete", rest, _delete_args)
        (kind,) = kinds_of(opts.kind)
        return delete(kind, opts)
    if verb == "describe":
        opts = strict("kubectl describe", rest, _describe_args)
        kinds_of(opts.kind)
        return 0, f"(stand-in) describe {opts.kind} in {opts.namespace}\n", ""
    if verb == "logs":
        opts = strict("kubectl logs", rest, _logs_args)
        return 0, f"(stand-in) logs of {opts.namespace}/{opts.pod}/{opts.container}\n", ""
    if verb == "get":
        return get(strict("kubectl get", rest, _get_args))
    raise Refused(f"kubectl: the stand-in does not know the verb {verb!r}")


def delete(kind: str, opts: argparse.Namespace) -> tuple[int, str, str]:
    with locked_state(True) as state:
        before = len(state["objects"])
        state["objects"] = [
            o
            for o in state["objects"]
            if not (
                o["kind"] == kind
                and (opts.namespace is None or meta(o).get("namespace") == opts.namespace)
                and (opts.name is None or meta(o)["name"] == opts.name)
                and matches(opts.selector, meta(o).get("labels", {}))
            )
        ]
        if kind == "Namespace":
            state["objects"] = [o for o in state["objects"] if meta(o).get("namespace") != opts.name]
        if kind == "ConfigMap":  # garbage collection of what the ConfigMap owned
            state["objects"] = [
                o
                for o in state["objects"]
                if not any(r.get("name") == opts.name for r in meta(o).get("ownerReferences", []))
            ]
        gone = before - len(state["objects"])
    if not gone and opts.name and not opts.ignore_not_found:
        return 1, "", f'Error from server (NotFound): {opts.kind} "{opts.name}" not found'
    return 0, f"deleted {gone}\n", ""


def get(opts: argparse.Namespace) -> tuple[int, str, str]:
    kinds = kinds_of(opts.kind)
    with locked_state(False) as state:
        items = []
        for kind in kinds:
            if kind == "ServiceAccount":
                ok = bool(find(state, "Namespace", name=opts.namespace)) and opts.name == "default"
                return (0, "default\n", "") if ok else (1, "", "NotFound")
            if kind == "EndpointSlice":
                items += [
                    s
                    for s in endpoint_slices(state, opts.namespace)
                    if matches(opts.selector, meta(s).get("labels", {}))
                ]
                continue
            scope = None if opts.all_namespaces or kind == "Namespace" else opts.namespace
            kind_items = find(state, None if kind == "all" else kind, scope, opts.name)
            items += [o for o in kind_items if matches(opts.selector, meta(o).get("labels", {}))]
    if opts.name is not None:
        if not items:
            return 1, "", f'Error from server (NotFound): {opts.kind} "{opts.name}" not found'
        return 0, json.dumps(items[0]), ""
    if opts.output != "json":
        return 0, "\n".join(f"{o['kind']}/{meta(o)['name']}" for o in items) + "\n", ""
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


def _helm_install_args(p):
    p.add_argument("words", nargs=3)  # upgrade RELEASE CHART
    p.add_argument("--install", action="store_true", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--create-namespace", action="store_true")
    p.add_argument("--values", action="append", default=[])
    p.add_argument("--wait", choices=["watcher"], required=True)
    p.add_argument("--wait-for-jobs", action="store_true")
    p.add_argument("--timeout", required=True)


def _helm_uninstall_args(p):
    p.add_argument("words", nargs=2)  # uninstall RELEASE
    p.add_argument("--namespace", required=True)
    p.add_argument("--wait", choices=["watcher"], required=True)
    p.add_argument("--timeout", required=True)


def _helm_get_values_args(p):
    p.add_argument("words", nargs=3)  # get values RELEASE
    p.add_argument("--namespace", required=True)
    p.add_argument("--output", choices=["json"], required=True)


def helm(args: list[str]) -> None:
    if args[:1] == ["--kubeconfig"]:
        args = args[2:]
    if args[:2] == ["get", "values"]:
        strict("helm get values", args, _helm_get_values_args)
        with locked_state(False) as state:
            print(json.dumps(state["helm_values"]))
        sys.exit(0)
    if args[:1] == ["upgrade"]:
        strict("helm upgrade", args, _helm_install_args)
        sys.exit(helm_install(args))
    if args[:1] == ["uninstall"]:
        strict("helm uninstall", args, _helm_uninstall_args)
        sys.exit(helm_uninstall(args))
    if args[:1] in (["template"], ["version"]):  # no cluster involved: the real helm answers
        real = os.environ["FAKE_REAL_HELM"]
        os.execv(real, [real, *args])
    raise Refused(f"helm: the stand-in does not know {args[:2]}")


def main() -> None:
    tool = Path(sys.argv[0]).name
    try:
        if tool == "helm":
            helm(sys.argv[1:])
        stdin = sys.stdin.read() if not sys.stdin.isatty() and "apply" in sys.argv else ""
        code, out, err = kubectl(sys.argv[1:], stdin)
    except Refused as exc:
        sys.stderr.write(f"stand-in {tool}: refused: {exc}\n")
        sys.exit(2)
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)


if __name__ == "__main__":
    main()
