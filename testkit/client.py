"""A small OpenMeter v1 client on httpx: ingest, meters, query.

Every call that can fail because the server is not there (yet) raises
`TransientError`, so pollers retry it; any other unexpected status is an
`ApiError` carrying the status, the problem+json body and a curl line that
reproduces the request.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlencode

import httpx

from testkit.usage.events import batch_body, structured
from testkit.usage.reference import Query
from testkit.usage.compare import Table, TransientError, rows_from_csv, rows_from_json

CE_JSON = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


class ApiError(AssertionError):
    def __init__(self, what: str, response: httpx.Response, reproduce: str):
        body = response.text[:2000]
        super().__init__(f"{what}: HTTP {response.status_code} {response.reason_phrase}\n{body}\nreproduce: {reproduce}")
        self.status = response.status_code
        self.body = body


def curl(method: str, url: str, headers: Mapping[str, str] | None = None, body: bytes | None = None) -> str:
    argv = ["curl", "-sS", "-X", method, url]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if body is not None:
        text = body.decode(errors="replace")
        argv += ["--data-binary", text if len(text) <= 400 else text[:400] + "…"]
    return shlex.join(argv)


class OpenMeterClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0,
                 on_transient: Callable[[], None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.on_transient = on_transient  # e.g. restart a port-forward whose pod went away
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "OpenMeterClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------
    def _send(self, method: str, path: str, *, params: Sequence[tuple[str, str]] | None = None,
              headers: Mapping[str, str] | None = None, content: bytes | None = None) -> httpx.Response:
        try:
            response = self.http.request(method, path, params=params, headers=headers, content=content)
        except httpx.TransportError as exc:
            if self.on_transient is not None:
                self.on_transient()
            raise TransientError(f"{method} {self.base_url}{path}: {exc!r}") from exc
        if response.status_code in (502, 503, 504):
            raise TransientError(f"{method} {self.base_url}{path}: HTTP {response.status_code} {response.text[:300]}")
        return response

    def reproduce(self, method: str, path: str, params: Sequence[tuple[str, str]] | None = None,
                  headers: Mapping[str, str] | None = None, content: bytes | None = None) -> str:
        url = f"{self.base_url}{path}" + (f"?{urlencode(list(params))}" if params else "")
        return curl(method, url, headers, content)

    def _expect(self, what: str, response: httpx.Response, *statuses: int, **request: Any) -> httpx.Response:
        if response.status_code not in statuses:
            raise ApiError(what, response, self.reproduce(response.request.method, response.request.url.path, **request))
        return response

    # --- ingest -----------------------------------------------------------------
    def send_event(self, event: Mapping[str, Any]) -> None:
        headers, body = structured(event)
        response = self._send("POST", "/api/v1/events", headers=headers, content=body)
        self._expect(f"ingest event {event.get('id')}", response, 204, headers=headers, content=body)

    def send_batch(self, events: Sequence[Mapping[str, Any]]) -> None:
        body = batch_body(events)
        headers = {"content-type": CE_BATCH}
        response = self._send("POST", "/api/v1/events", headers=headers, content=body)
        self._expect(f"ingest batch of {len(events)}", response, 204, headers=headers, content=body)

    # --- meters -----------------------------------------------------------------
    def list_meters(self) -> list[dict[str, Any]]:
        response = self._expect("list meters", self._send("GET", "/api/v1/meters"), 200)
        body = response.json()
        return body if isinstance(body, list) else list(body.get("items", []))

    def create_meter(self, meter: Mapping[str, Any]) -> dict[str, Any]:
        content = json.dumps(dict(meter)).encode()
        headers = {"content-type": "application/json"}
        response = self._send("POST", "/api/v1/meters", headers=headers, content=content)
        return self._expect(f"create meter {meter['slug']}", response, 200, 201, headers=headers,
                            content=content).json()

    def delete_meter(self, slug: str) -> None:
        response = self._send("DELETE", f"/api/v1/meters/{slug}")
        self._expect(f"delete meter {slug}", response, 204, 200, 404)

    def ensure_meters(self, meters: Iterable[Mapping[str, Any]]) -> None:
        """Create the meters that do not exist; fail when one exists with another definition."""
        present = {m["slug"]: m for m in self.list_meters()}
        for meter in meters:
            existing = present.get(meter["slug"])
            if existing is None:
                try:
                    self.create_meter(meter)
                except ApiError as exc:
                    if exc.status != 409:  # created meanwhile by another run: compared below
                        raise
                    existing = next(m for m in self.list_meters() if m["slug"] == meter["slug"])
            if existing is not None:
                mismatch = meter_mismatch(meter, existing)
                if mismatch:
                    raise AssertionError(f"meter {meter['slug']} exists with another definition: {mismatch}")

    # --- query ------------------------------------------------------------------
    def query(self, slug: str, query: Query) -> Table:
        params = query.params()
        response = self._send("GET", f"/api/v1/meters/{slug}/query", params=params)
        self._expect(f"query {slug}", response, 200, params=params)
        return rows_from_json(response.json(), windowed=query.window_size is not None)

    def query_csv(self, slug: str, query: Query) -> Table:
        params = query.params()
        headers = {"accept": "text/csv"}
        response = self._send("GET", f"/api/v1/meters/{slug}/query", params=params, headers=headers)
        self._expect(f"query {slug} as CSV", response, 200, params=params, headers=headers)
        group_keys = tuple(sorted(k for k in query.group_by if k != "subject"))
        return rows_from_csv(response.text, windowed=query.window_size is not None, group_keys=group_keys)

    def query_reproduce(self, slug: str, query: Query, csv: bool = False) -> str:
        return self.reproduce("GET", f"/api/v1/meters/{slug}/query", query.params(),
                              {"accept": "text/csv"} if csv else None)

    # --- health -----------------------------------------------------------------
    def answers(self) -> bool:
        """True when the API serves a real call (list meters answers 200 with JSON)."""
        try:
            response = self._send("GET", "/api/v1/meters")
        except TransientError:
            return False
        if response.status_code != 200:
            return False
        try:
            response.json()
        except ValueError:
            return False
        return True


def meter_mismatch(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> str:
    problems = []
    for key in ("eventType", "aggregation", "valueProperty"):
        if (wanted.get(key) or None) != (existing.get(key) or None):
            problems.append(f"{key} {existing.get(key)!r} instead of {wanted.get(key)!r}")
    if dict(wanted.get("groupBy") or {}) != dict(existing.get("groupBy") or {}):
        problems.append(f"groupBy {existing.get('groupBy')!r} instead of {wanted.get('groupBy')!r}")
    return "; ".join(problems)
