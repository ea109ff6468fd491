"""POST /api/v1/events is served by the lean path (ingest_path.py), never by Starlette's
middleware and router: with many clients posting one event each, that stack was about half
of the API's CPU per event. What the path answers is held by the behaviour tests
(test_ingest_api, test_auth, test_permissions, test_http_limits, test_problem_content_type);
here, that it is the path that answers.
"""

from __future__ import annotations

import asyncio

import httpx


def test_posts_of_events_take_the_lean_path_and_everything_else_starlettes(unconnected_app):
    app = unconnected_app

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            answers = [
                await client.post("/api/v1/events", content=b"{}", headers={"Content-Type": "text/plain"}),
                await client.post("/api/v1/events?x=%00", content=b"{}"),
            ]
            assert app.middleware_stack is None, "a POST of events went through Starlette's stack"
            answers.append(await client.get("/api/v1/openapi.yaml"))
            return answers

    refused_type, refused_nul, document = asyncio.run(scenario())
    assert refused_type.status_code == 400
    assert refused_type.headers["content-type"] == "application/problem+json"
    assert "unsupported Content-Type 'text/plain'" in refused_type.json()["detail"]
    assert refused_nul.status_code == 400
    assert refused_nul.json()["detail"] == "a query parameter contains a NUL character (%00)"
    assert document.status_code == 200
    assert app.middleware_stack is not None  # built by the first request Starlette served
