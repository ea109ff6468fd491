"""The OpenMeter v1 API client of every tier, on httpx: ingest, meters, queries, events.

Two kinds of calls:

* the usage calls of the e2e suite (`send_event`, `send_batch`, `list_meters`,
  `ensure_meters`, `usage`, `usage_csv`, `answers`) send CloudEvents encoded by the
  CloudEvents SDK and read answers as usage tables; when the server is not there
  (yet) they raise `TransientError`, so pollers retry them;
* the engine tier's calls (`post_events`, `ingest`, `query`, `events`, `total` and
  their `..._until` waits) send and return plain JSON, and `http` is there for
  requests a test builds by hand.

An unexpected status is an `ApiError` (an AssertionError) carrying the status, the
problem+json body and a curl line that reproduces the request.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlencode

import httpx
import orjson

from testkit.timeouts import TIMEOUTS
from testkit.usage.compare import Table, TransientError, rows_from_csv, rows_from_json
from testkit.usage.events import batch_body, structured
from testkit.usage.reference import Query
from testkit.wait import WaitTimeout, poll

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
CREATED = (200, 201)  # create meter: the engine answers 201 (the spec's), upstream's code 200 (the clickhouse profile)


def event(
    id: str, type: str, subject: str, *, time: str | None = None, data: Any = None, source: str = "tests", **extra
) -> dict:
    """A CloudEvent as a plain dict (extra attributes as given, even invalid ones)."""
    out = {"specversion": "1.0", "id": id, "source": source, "type": type, "subject": subject, **extra}
    if time is not None:
        out["time"] = time
    if data is not None:
        out["data"] = data
    return out


class ApiError(AssertionError):
    def __init__(self, what: str, response: httpx.Response, reproduce: str):
        body = response.text[:2000]
        super().__init__(
            f"{what}: HTTP {response.status_code} {response.reason_phrase}\n{body}\nreproduce: {reproduce}"
        )
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
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        on_transient: Callable[[], None] | None = None,
    ):
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
    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        try:
            response = self.http.request(method, path, params=params, headers=headers, content=content)
        except httpx.TransportError as exc:
            if self.on_transient is not None:
                self.on_transient()
            raise TransientError(f"{method} {self.base_url}{path}: {exc!r}") from exc
        if response.status_code in (502, 503, 504):
            raise TransientError(f"{method} {self.base_url}{path}: HTTP {response.status_code} {response.text[:300]}")
        return response

    def reproduce(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> str:
        url = f"{self.base_url}{path}" + (f"?{urlencode(list(params))}" if params else "")
        return curl(method, url, headers, content)

    def _expect(self, what: str, response: httpx.Response, *statuses: int, **request: Any) -> httpx.Response:
        if response.status_code not in statuses:
            raise ApiError(
                what, response, self.reproduce(response.request.method, response.request.url.path, **request)
            )
        return response

    # --- ingest -----------------------------------------------------------------
    def send_event(self, event: Mapping[str, Any]) -> None:
        headers, body = structured(event)
        response = self._send("POST", "/api/v1/events", headers=headers, content=body)
        self._expect(f"ingest event {event.get('id')}", response, 204, headers=headers, content=body)

    def send_batch(self, events: Sequence[Mapping[str, Any]]) -> None:
        body = batch_body(events)
        headers = {"content-type": BATCH}
        response = self._send("POST", "/api/v1/events", headers=headers, content=body)
        self._expect(f"ingest batch of {len(events)}", response, 204, headers=headers, content=body)

    # --- meters -----------------------------------------------------------------
    def list_meters(self) -> list[dict[str, Any]]:
        response = self._expect("list meters", self._send("GET", "/api/v1/meters"), 200)
        body = response.json()
        return body if isinstance(body, list) else list(body.get("items", []))

    def create_meter(self, meter: Mapping[str, Any] | None = None, /, **body: Any) -> dict[str, Any]:
        """Create a meter given as a mapping or as keywords; its JSON as the API answers it."""
        meter = {**(meter or {}), **body}
        content = json.dumps(meter).encode()
        headers = {"content-type": "application/json"}
        response = self._send("POST", "/api/v1/meters", headers=headers, content=content)
        return self._expect(
            f"create meter {meter.get('slug')}", response, *CREATED, headers=headers, content=content
        ).json()

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

    # --- usage, as tables -----------------------------------------------------------
    def usage(self, slug: str, query: Query) -> Table:
        params = query.params()
        response = self._send("GET", f"/api/v1/meters/{slug}/query", params=params)
        self._expect(f"query {slug}", response, 200, params=params)
        return rows_from_json(response.json(), windowed=query.window_size is not None)

    def usage_csv(self, slug: str, query: Query) -> Table:
        params = query.params()
        headers = {"accept": "text/csv"}
        response = self._send("GET", f"/api/v1/meters/{slug}/query", params=params, headers=headers)
        self._expect(f"query {slug} as CSV", response, 200, params=params, headers=headers)
        group_keys = tuple(sorted(k for k in query.group_by if k != "subject"))
        return rows_from_csv(response.text, windowed=query.window_size is not None, group_keys=group_keys)

    def usage_reproduce(self, slug: str, query: Query, csv: bool = False) -> str:
        return self.reproduce(
            "GET", f"/api/v1/meters/{slug}/query", query.params(), {"accept": "text/csv"} if csv else None
        )

    # --- plain JSON, for the engine tier ---------------------------------------------
    def post_events(self, events: list[dict] | dict, content_type: str | None = None) -> httpx.Response:
        """POST events as JSON (default content type: batch for a list, single for one); the raw answer."""
        if content_type is None:
            content_type = BATCH if isinstance(events, list) else SINGLE
        return self.http.post("/api/v1/events", content=orjson.dumps(events), headers={"content-type": content_type})

    def ingest(self, events: list[dict] | dict, content_type: str | None = None) -> None:
        response = self.post_events(events, content_type)
        self._expect(
            "ingest",
            response,
            204,
            headers={"content-type": response.request.headers["content-type"]},
            content=response.request.content,
        )

    def query(self, slug: str, **params: Any) -> dict:
        """The query answer as JSON; keywords as the API names them (`from_` for `from`, lists repeat)."""
        pairs = _params(params)
        response = self.http.get(f"/api/v1/meters/{slug}/query", params=pairs)
        return self._expect(f"query {slug}", response, 200, params=pairs).json()

    def query_until(
        self, slug: str, done: Callable[[dict], bool], timeout: float = TIMEOUTS.usage_convergence, **params: Any
    ) -> dict:
        """Poll the query until `done` holds (the sink is asynchronous) and return that answer;
        WaitTimeout with the last answer when it does not hold within `timeout` (a wait that ran
        out must not let a test go on as if it had not)."""
        polled = poll(lambda: self.query(slug, **params), done, timeout)
        if not polled.done:
            raise WaitTimeout(
                f"query of {slug} {params or ''} not as awaited within {timeout:.0f}s "
                f"({polled.attempts} answers); the last: {json.dumps(polled.last)[:2000]}"
            )
        return polled.last

    def total(self, slug: str, **params: Any) -> float | None:
        data = self.query(slug, **params)["data"]
        return sum(row["value"] for row in data) if data else None

    def events(self, **params: Any) -> list[dict]:
        pairs = _params(params)
        response = self.http.get("/api/v1/events", params=pairs)
        return self._expect("list events", response, 200, params=pairs).json()

    def events_until(
        self, done: Callable[[list], bool], timeout: float = TIMEOUTS.usage_convergence, **params: Any
    ) -> list[dict]:
        return poll(lambda: self.events(**params), done, timeout).last

    def wait_stored(self, id_part: str, count: int, **params: Any) -> list[dict]:
        """Wait until `count` events whose id contains `id_part` are stored (at most 100)."""
        items = self.events_until(lambda found: len(found) >= count, id=id_part, limit=100, **params)
        assert len(items) == count, f"{len(items)} of {count} events with id ~ {id_part!r} stored"
        return items

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


def _params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Python keyword names to the API's (from_ -> from); lists become repeated parameters."""
    out = []
    for key, value in params.items():
        name = key.rstrip("_")
        for item in value if isinstance(value, (list, tuple)) else [value]:
            out.append((name, item))
    return out


def meter_mismatch(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> str:
    problems = []
    for key in ("eventType", "aggregation", "valueProperty"):
        if (wanted.get(key) or None) != (existing.get(key) or None):
            problems.append(f"{key} {existing.get(key)!r} instead of {wanted.get(key)!r}")
    if dict(wanted.get("groupBy") or {}) != dict(existing.get("groupBy") or {}):
        problems.append(f"groupBy {existing.get('groupBy')!r} instead of {wanted.get('groupBy')!r}")
    return "; ".join(problems)
