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
# Returns {dependency: None if fine, else how the process works without it}: named in the
# answer, never failing it (the process still does its job, durably).
DegradedCheck = Callable[[], dict[str, str | None]]


def _no_degraded() -> dict[str, str | None]:
    return {}


def telemetry_app(readiness: ReadinessCheck, degraded: DegradedCheck = _no_degraded) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def live(_: Request) -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    async def ready(_: Request) -> Response:
        checks = await readiness()
        notes = degraded()
        failing = {name: problem for name, problem in checks.items() if problem}
        shown = {k: v or "ok" for k, v in {**checks, **notes}.items()}
        if failing:
            detail = "; ".join(f"{name}: {problem}" for name, problem in sorted(failing.items()))
            return Problem(503, f"not ready: {detail}", extra={"checks": shown}).response()
        status = "degraded" if any(notes.values()) else "ok"
        return Response(orjson.dumps({"status": status, "checks": shown}), media_type="application/json")

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz/live", live), Route("/healthz/ready", ready)])
