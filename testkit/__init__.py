"""The test kit that every tier imports: servers and the engine stack on this machine,
the chart rendered and validated offline, the NetworkPolicy model, the usage reference
and the API client, kubectl / helm / kind, waits, timeouts and run ids.

    testkit/stack/     PostgreSQL, nats-server, Valkey and the engine's processes (`bpom-stack`)
    testkit/chart/     helm template + offline schema validation (CRDs vendored), ServiceMonitor chain
    testkit/netpol/    the NetworkPolicy model, truth tables, what each engine component must reach
    testkit/usage/     fixture events, the query matrix, the independent usage reference, comparison
    testkit/client.py  the OpenMeter v1 API client of every tier
    testkit/platform.py  fixtures/platform.yaml, the one home of every pinned version

It imports nothing from the tiers (tests/, e2e/, bench/), which import it.
"""
