"""The telemetry port: /metrics, /healthz/live, /healthz/ready (api and sink alike).

Kept off the API port so that scraping and probes need no API credentials and a
NetworkPolicy can open them to the monitoring namespace alone.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .problems import Problem

# Returns {dependency: None if fine, else what is wrong}.
ReadinessCheck = Callable[[], Awaitable[dict[str, str | None]]]


def telemetry_app(readiness: ReadinessCheck) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def live(_: Request) -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    async def ready(_: Request) -> Response:
        checks = await readiness()
        failing = {name: problem for name, problem in checks.items() if problem}
        if failing:
            detail = "; ".join(f"{name}: {problem}" for name, problem in sorted(failing.items()))
            return Problem(503, f"not ready: {detail}",
                           extra={"checks": {k: v or "ok" for k, v in checks.items()}}).response()
        return Response(orjson.dumps({"status": "ok", "checks": {k: "ok" for k in checks}}),
                        media_type="application/json")

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz/live", live),
                             Route("/healthz/ready", ready)])
