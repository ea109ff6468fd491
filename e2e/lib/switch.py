"""The backend switch on a cluster: the engine release whose history goes to upstream OpenMeter.

e2e/test_export_upstream.py installs it beside the upstream release under test (the
clickhouse cell) and turns its export on; the chart tier renders the same values.
"""

from __future__ import annotations

from typing import Any, Mapping

UPSTREAM_API_PORT = 80  # the upstream chart's api container port `http`


def source_sets(upstream_namespace: str, upstream_selector: Mapping[str, str]) -> dict[str, Any]:
    """The engine release beside upstream: its own database, and the egress to upstream's API pods."""
    return {
        "postgres.cluster.create": True,
        "postgres.cluster.name": "",
        "postgres.cluster.namespace": "",
        "postgres.connectionSecret.name": "",
        "networkPolicy.egress.exportTarget": [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": upstream_namespace}},
                        "podSelector": {"matchLabels": dict(upstream_selector)},
                    }
                ],
                "ports": [{"port": UPSTREAM_API_PORT, "protocol": "TCP"}],
            }
        ],
    }
