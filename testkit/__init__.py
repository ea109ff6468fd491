"""The test kit that every tier imports: servers and the engine stack on this machine,
the chart rendered and validated offline, the NetworkPolicy model, the usage reference
and the API client, kubectl / helm / kind, waits, timeouts and run ids.

    stack/        PostgreSQL, nats-server, Valkey and the engine's processes (`python -m testkit.stack`)
    chart/        helm template + offline schema validation (CRDs vendored), the ServiceMonitor chain
    netpol/       the NetworkPolicy model, truth tables, what each engine component must reach (needs.py)
    usage/        fixture events, the query matrix, the independent usage reference, comparison
    client.py     the OpenMeter v1 API client of every tier
    platform.py   fixtures/platform.yaml as objects: the test platform and every pinned version
    tools.py, helm.py, kube.py, kind.py, command.py   helm / kubectl / kind binaries and running them
    wait.py, timeouts.py, runid.py, paths.py, values.py, net.py   waits, named timeouts, run ids,
                  repository paths, helm-style values merge, loopback ports

It imports nothing from the tiers (tests/, e2e/, bench/), which import it.
"""
