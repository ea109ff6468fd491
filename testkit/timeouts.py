"""Every wait in the suite, named and overridable in one place.

Override any of them with an environment variable BPOM_TIMEOUT_<NAME> (seconds),
e.g. BPOM_TIMEOUT_USAGE_CONVERGENCE=120 on a slow CI runner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Timeouts:
    server_start: float = 30.0  # a local PostgreSQL / nats-server / Valkey accepts connections
    server_stop: float = 15.0  # a local server exits after SIGTERM
    engine_ready: float = 60.0  # engine /healthz/ready answers 200
    usage_convergence: float = 60.0  # the query API agrees with the expected usage
    usage_settle: float = 10.0  # after agreeing, the answer must stay the same (no late double count)
    tool_downloads: float = 600.0  # kind, helm and kubectl fetched on a first run (about 90 MB)
    prerequisites: float = 150.0  # the kind tier's prerequisite checks after those downloads
    kind_create: float = 600.0  # kind create cluster
    helm_install: float = 600.0  # helm install --wait of one platform chart
    api_answers: float = 300.0  # the chart's API answers a real call in the cluster
    databases_ready: float = 600.0  # the CloudNativePG clusters of fixtures/platform.yaml report Ready
    probe_connect: float = 3.0  # one connection attempt of a NetworkPolicy probe (inside the pod)
    probe_exec: float = 20.0  # one `kubectl exec` of a probe, start to finish
    probe_pods_ready: float = 180.0  # the probe pods run (Running, not Ready: they never are)
    netpol_canary: float = 60.0  # before any policy, the canary client reaches its server
    netpol_enforce: float = 60.0  # a new default-deny policy blocks the canary client
    netpol_settle: float = 60.0  # wrong cells of the egress matrix are probed again until this passes
    diagnostics: float = 120.0  # collecting events / describe / logs
    hpa_active: float = 300.0  # an HPA reports AbleToScale and ScalingActive (metrics-server has data)
    port_forward: float = 30.0  # kubectl port-forward listens on its local port
    certificate_ready: float = 180.0  # cert-manager reports a Certificate Ready (its Secret written)
    route_served: float = 180.0  # a Gateway listener / Ingress serves the API over HTTPS
    export_job: float = 600.0  # the chart's export Job completes on a cluster


def _load() -> Timeouts:
    overrides = {}
    for f in fields(Timeouts):
        raw = os.environ.get(f"BPOM_TIMEOUT_{f.name.upper()}")
        if raw:
            try:
                overrides[f.name] = float(raw)
            except ValueError as exc:
                raise ValueError(f"BPOM_TIMEOUT_{f.name.upper()}={raw!r} is not a number of seconds") from exc
    return Timeouts(**overrides)


TIMEOUTS = _load()
