"""The example event of README's quick start, which `python -m testkit.stack` prints too.

Every meter of `fixtures/meters.yaml` on its type counts it (a test posts README's copy
and checks each): an example the meters it shows do not count teaches the wrong fields.
"""

from __future__ import annotations

QUICKSTART_EVENT = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "tpp-gateway",
    "type": "fingate.api.call",
    "subject": "tpp-acme",
    "data": {"method": "GET", "endpoint": "/accounts", "status_class": "2xx", "latency_ms": 42, "psu_id": "psu-1"},
}
