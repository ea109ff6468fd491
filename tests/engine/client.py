"""A thin HTTP client for the engine's API, with the waits the tests need."""

from __future__ import annotations

from typing import Any, Callable

import httpx
import orjson
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from e2e.lib.timeouts import TIMEOUTS

BATCH = "application/cloudevents-batch+json"
SINGLE = "application/cloudevents+json"


def event(id: str, type: str, subject: str, *, time: str | None = None, data: Any = None,
          source: str = "tests", **extra) -> dict:
    out = {"specversion": "1.0", "id": id, "source": source, "type": type, "subject": subject, **extra}
    if time is not None:
        out["time"] = time
    if data is not None:
        out["data"] = data
    return out


class EngineClient:
    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def post_events(self, events: list[dict] | dict, content_type: str | None = None) -> httpx.Response:
        if content_type is None:
            content_type = BATCH if isinstance(events, list) else SINGLE
        return self.http.post("/api/v1/events", content=orjson.dumps(events), headers={"content-type": content_type})

    def ingest(self, events: list[dict] | dict, content_type: str | None = None) -> None:
        response = self.post_events(events, content_type)
        assert response.status_code == 204, response.text

    def create_meter(self, **body) -> dict:
        response = self.http.post("/api/v1/meters", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def query(self, slug: str, **params) -> dict:
        response = self.http.get(f"/api/v1/meters/{slug}/query", params=_params(params))
        assert response.status_code == 200, response.text
        return response.json()

    def query_until(self, slug: str, done: Callable[[dict], bool], timeout: float = TIMEOUTS.usage_convergence,
                    **params) -> dict:
        """Poll the query until `done` holds (the sink is asynchronous); the last answer either way."""
        return _poll(lambda: self.query(slug, **params), done, timeout)

    def events(self, **params) -> list[dict]:
        response = self.http.get("/api/v1/events", params=_params(params))
        assert response.status_code == 200, response.text
        return response.json()

    def wait_stored(self, id_part: str, count: int, **params) -> list[dict]:
        """Wait until `count` events whose id contains `id_part` are stored (at most 100)."""
        items = self.events_until(lambda found: len(found) >= count, id=id_part, limit=100, **params)
        assert len(items) == count, f"{len(items)} of {count} events with id ~ {id_part!r} stored"
        return items

    def events_until(self, done: Callable[[list], bool], timeout: float = TIMEOUTS.usage_convergence,
                     **params) -> list[dict]:
        return _poll(lambda: self.events(**params), done, timeout)

    def total(self, slug: str, **params) -> float | None:
        data = self.query(slug, **params)["data"]
        return sum(row["value"] for row in data) if data else None


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool],
             timeout: float = TIMEOUTS.usage_convergence) -> Any:
    """Call `read` until `done` holds of its answer (or the timeout passes); the last answer."""
    return _poll(read, done, timeout)


def _poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.1),
                        retry=retry_if_result(lambda answer: not done(answer)),
                        retry_error_callback=lambda state: state.outcome.result())
    return retrying(read)


def _params(params: dict) -> list[tuple[str, str]]:
    """Python keyword names to the API's (from_ -> from); lists become repeated parameters."""
    out = []
    for key, value in params.items():
        name = key.rstrip("_")
        for item in value if isinstance(value, (list, tuple)) else [value]:
            out.append((name, item))
    return out
