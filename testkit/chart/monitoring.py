"""What a ServiceMonitor really scrapes, and what an HPA really targets.

Prometheus scrapes, for every endpoint of a ServiceMonitor, the pods behind each
Service it selects, at the container port that the Service port's `targetPort`
names. `scrape_targets` follows that chain through plain objects (rendered by helm
or read from a cluster), so a test can then ask each pod at that port for
/metrics, and a renamed port on either side fails with the link that broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from testkit.netpol.model import Selector


class MonitoringError(AssertionError):
    """The chain ServiceMonitor -> Service -> port -> pod is broken; the message says where."""


@dataclass(frozen=True)
class ScrapeTarget:
    service: str
    pod: str
    port: int  # the container port Prometheus connects to
    port_name: str  # its name on the container ("" when unnamed)
    path: str


def _name(obj: Mapping[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "?")


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def selects_namespace(monitor: Mapping[str, Any], namespace: str) -> bool:
    selector = monitor.get("spec", {}).get("namespaceSelector") or {}
    if selector.get("any"):
        return True
    names = selector.get("matchNames")
    if names is None:  # no namespaceSelector: the ServiceMonitor's own namespace
        return monitor.get("metadata", {}).get("namespace") == namespace
    return namespace in names


def selected_services(monitor: Mapping[str, Any], services: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    selector = Selector.parse(monitor.get("spec", {}).get("selector") or {})
    return [
        dict(s)
        for s in services
        if selects_namespace(monitor, s.get("metadata", {}).get("namespace", "")) and selector.matches(_labels(s))
    ]


def pods_behind(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    wanted = service.get("spec", {}).get("selector") or {}
    if not wanted:
        return []
    return [dict(p) for p in pods if all(_labels(p).get(k) == v for k, v in wanted.items())]


def container_port(pod: Mapping[str, Any], target_port: int | str) -> tuple[int, str] | None:
    """(number, name) of the container port a Service targetPort designates on this pod."""
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if (isinstance(target_port, str) and port.get("name") == target_port) or (
                isinstance(target_port, int) and port.get("containerPort") == target_port
            ):
                return port["containerPort"], port.get("name", "")
    if isinstance(target_port, int):
        return target_port, ""  # a number needs no declaration on the container
    return None


def scrape_targets(
    monitor: Mapping[str, Any], services: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> list[ScrapeTarget]:
    """Every (pod, container port, path) the ServiceMonitor makes Prometheus scrape."""
    services, pods = list(services), list(pods)
    chosen = selected_services(monitor, services)
    if not chosen:
        raise MonitoringError(
            f"ServiceMonitor {_name(monitor)} selects no Service: selector "
            f"{monitor.get('spec', {}).get('selector')}, Services "
            f"{[(_name(s), _labels(s)) for s in services]}"
        )
    targets, problems = [], []
    for endpoint in monitor.get("spec", {}).get("endpoints") or []:
        port_name, path = endpoint.get("port"), endpoint.get("path", "/metrics")
        for service in chosen:
            ports = {p.get("name"): p for p in service.get("spec", {}).get("ports") or []}
            if port_name not in ports:
                problems.append(
                    f"endpoint port {port_name!r} is not a port of Service {_name(service)} "
                    f"(its ports: {sorted(str(n) for n in ports)})"
                )
                continue
            target_port = ports[port_name].get("targetPort", ports[port_name]["port"])
            behind = pods_behind(service, pods)
            if not behind:
                problems.append(
                    f"Service {_name(service)} selects no pod (selector {service.get('spec', {}).get('selector')})"
                )
            for pod in behind:
                resolved = container_port(pod, target_port)
                if resolved is None:
                    problems.append(
                        f"Service {_name(service)} port {port_name!r} targets {target_port!r}, "
                        f"which no container of pod {_name(pod)} declares"
                    )
                    continue
                targets.append(ScrapeTarget(_name(service), _name(pod), resolved[0], resolved[1], path))
    if problems:
        raise MonitoringError(f"ServiceMonitor {_name(monitor)}: " + "; ".join(problems))
    return targets


def pods_of_workloads(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pods as rendered workloads would create them (one per Deployment/StatefulSet/Job template)."""
    pods = []
    for obj in objects:
        if obj.get("kind") in ("Deployment", "StatefulSet", "Job"):
            template = obj.get("spec", {}).get("template", {})
            pods.append(
                {
                    "metadata": {
                        "name": f"{_name(obj)}-pod",
                        "namespace": obj.get("metadata", {}).get("namespace"),
                        "labels": dict(template.get("metadata", {}).get("labels") or {}),
                    },
                    "spec": template.get("spec", {}),
                }
            )
    return pods


def hpa_target_problem(hpa: Mapping[str, Any], deployments: Iterable[Mapping[str, Any]]) -> str | None:
    """None when the HPA's scaleTargetRef names one of these Deployments; else what is wrong."""
    ref = hpa.get("spec", {}).get("scaleTargetRef") or {}
    names = sorted(_name(d) for d in deployments)
    if ref.get("kind") != "Deployment" or ref.get("apiVersion") != "apps/v1":
        return f"HPA {_name(hpa)} targets {ref.get('apiVersion')} {ref.get('kind')}, not an apps/v1 Deployment"
    if ref.get("name") not in names:
        return f"HPA {_name(hpa)} targets Deployment {ref.get('name')!r}; the Deployments are {names}"
    return None
