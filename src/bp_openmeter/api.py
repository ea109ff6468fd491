"""The OpenMeter v1 HTTP API (Starlette): routes, request parsing, problem+json errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Awaitable, Callable, TypeVar

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import auth, events_list, meter_store, metrics, query_output, query_params, query_run
from .asgi_request import nul_in_query, receive_body
from .body_budget import BodyBudget, ChargeBodies
from .config import Config
from .deadline import DatabaseDeadline, within
from .disconnect import ClientGone, unless_client_leaves
from .horizon_watch import HorizonWatch
from .ingest import Ingestor
from .ingest_path import INGEST_PATH, IngestPath, ingest_request
from .jsonlimits import has_nul
from .logs import get_logger
from .meters import Meter, MeterError, apply_update, parse_list_params, parse_meter_spec, valid_id_or_slug
from .problems import Problem, bad_request, internal_error, not_found
from .query_string import refuse_unknown
from .timefmt import format_time

log = get_logger("api")

T = TypeVar("T")
# Seconds a client is asked to wait after the database did not answer (a restart, a failover
# or a frozen node takes seconds, not one).
DATABASE_RETRY_AFTER_S = 5
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class ApiState:
    cfg: Config
    pool: AsyncConnectionPool
    ingestor: Ingestor
    horizon: HorizonWatch


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.scope, request.receive, limit, _state(request).cfg.api.body_timeout)


async def read_json(request: Request, limit: int = 1024 * 1024) -> Any:
    body = await read_body(request, limit)
    if not body:
        raise bad_request("request body is empty; a JSON object is expected")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc
    if has_nul(body):
        raise bad_request("request body contains a NUL character (\\u0000), which cannot be stored or matched")
    return parsed


def _state(request: Request) -> ApiState:
    return request.app.state.api


async def _read(request: Request, work: Awaitable[T]) -> T:
    """A reading request's database work: bounded by api.databaseDeadline, and stopped when
    its client leaves."""
    return await unless_client_leaves(request, within(_state(request).cfg.api.database_deadline, work))


# --- events ---------------------------------------------------------------------------


async def ingest_events(request: Request) -> Response:
    """The route's handler, for the app's route table (405s, the OpenAPI parity): the lean path
    answers every POST to the path before the router sees it."""
    await ingest_request(_state(request), request.scope, request.receive)
    return Response(status_code=204)


async def list_events(request: Request) -> Response:
    state = _state(request)
    params = events_list.parse_params(request.query_params)

    async def answer() -> list[dict[str, Any]]:
        async with state.pool.connection() as conn:
            return await events_list.list_events(conn, state.cfg.namespace, params)

    return json_response(await _read(request, answer()))


# --- meters ---------------------------------------------------------------------------


def _id_or_slug(request: Request) -> str:
    value = request.path_params["id_or_slug"]
    if not valid_id_or_slug(value):
        raise bad_request(
            f"meterIdOrSlug: {value[:80]!r} is neither a meter slug (^[a-z0-9]+(?:_[a-z0-9]+)*$) nor a meter id (ULID)",
            field="meterIdOrSlug",
        )
    return value


async def _meter_or_404(conn: psycopg.AsyncConnection, namespace: str, request: Request) -> Meter:
    id_or_slug = _id_or_slug(request)
    meter = await meter_store.get_meter(conn, namespace, id_or_slug)
    if meter is None:
        raise not_found(f"not found error: meter not found: {id_or_slug}")
    return meter


def _counts_complete(meter: Meter) -> None:
    """A meter whose backfill is still running would answer with part of its events."""
    if meter.backfilling:
        raise Problem(
            503,
            f"meter {meter.spec.slug} is still being built from the stored events; "
            "its answers are complete once that finishes",
            headers={"Retry-After": "5"},
        )


def _checked(parse: Callable[..., T], *args: Any) -> T:
    try:
        return parse(*args)
    except MeterError as exc:
        raise bad_request(f"validation error: {exc}", field=exc.field) from exc


async def list_meters(request: Request) -> Response:
    state = _state(request)
    params = _checked(parse_list_params, request.query_params)

    async def answer() -> list[Meter]:
        async with state.pool.connection() as conn:
            return await meter_store.list_meters(conn, state.cfg.namespace, params)

    return json_response([m.to_json() for m in await _read(request, answer())])


async def create_meter(request: Request) -> Response:
    state = _state(request)
    spec = _checked(parse_meter_spec, await read_json(request))
    async with state.pool.connection() as conn:
        try:
            meter = await meter_store.create_meter(conn, state.cfg.namespace, spec, max_meters=state.cfg.max_meters)
        except meter_store.MeterLimitReached as exc:
            raise Problem(409, f"conflict error: {exc}", extra={"field": "maxMeters"}) from exc
        except meter_store.MeterConflict as exc:
            raise Problem(409, "conflict error: meter with the same slug already exists") from exc
    log.info("meter created", slug=spec.slug, aggregation=spec.aggregation)
    return json_response(meter.to_json(), status=201)  # the spec's and the SDKs' (upstream's code answers 200)


async def get_meter(request: Request) -> Response:
    state = _state(request)

    async def answer() -> Meter:
        async with state.pool.connection() as conn:
            return await _meter_or_404(conn, state.cfg.namespace, request)

    return json_response((await _read(request, answer())).to_json())


async def update_meter(request: Request) -> Response:
    state = _state(request)
    body = await read_json(request)
    async with state.pool.connection() as conn:
        current = await _meter_or_404(conn, state.cfg.namespace, request)
        if current.deleted_at is not None:
            raise Problem(409, f"conflict error: meter {current.id} is deleted")
        spec = _checked(apply_update, current.spec, body)
        try:
            meter = await meter_store.update_meter(conn, state.cfg.namespace, current, spec)
        except meter_store.HistoryPastHorizon as exc:
            raise Problem(
                409,
                str(exc),
                extra={
                    "field": exc.changes[0][1][0],
                    "meter": current.spec.slug,
                    "retainedFrom": format_time(exc.horizon),
                },
            ) from exc
        except meter_store.MeterConflict as exc:
            raise Problem(409, f"conflict error: {exc}") from exc
    log.info("meter updated", slug=spec.slug)
    return json_response(meter.to_json())


async def delete_meter(request: Request) -> Response:
    state = _state(request)
    async with state.pool.connection() as conn:
        meter = await _meter_or_404(conn, state.cfg.namespace, request)
        if meter.deleted_at is None:
            await meter_store.delete_meter(conn, meter)
            log.info("meter deleted", slug=meter.spec.slug)
    return Response(status_code=204)


async def meter_subjects(request: Request) -> Response:
    state = _state(request)
    start, end = query_params.parse_range(request.query_params)

    async def answer() -> list[str]:
        async with state.pool.connection() as conn:
            meter = await _meter_or_404(conn, state.cfg.namespace, request)
            _counts_complete(meter)
            return await query_run.subjects(conn, meter, start, end, state.cfg.api.max_query_rows)

    return json_response(await _read(request, answer()))


async def meter_group_values(request: Request) -> Response:
    state = _state(request)
    start, end = query_params.parse_range(request.query_params, known={"from", "to"})
    key = request.path_params["group_by_key"]

    async def answer() -> list[str]:
        async with state.pool.connection() as conn:
            meter = await _meter_or_404(conn, state.cfg.namespace, request)
            _counts_complete(meter)
            return await query_run.group_values(conn, meter, key, start, end, state.cfg.api.max_query_rows)

    return json_response(await _read(request, answer()))


async def query_meter(request: Request) -> Response:
    state = _state(request)
    if request.method == "POST":
        # Its parameters are the body's: a subject or filter in the URL would be dropped, and
        # the answer would be every subject's usage.
        refuse_unknown(request.query_params, (), " (a POST query takes its parameters in the JSON body)")
        body = await read_json(request)
        params = query_params.parse_body_params(body)
    else:
        params = query_params.parse_query_params(request.query_params)
    started = time.perf_counter()

    csv = query_output.wants_csv(request.headers.get("accept", ""))

    async def answer() -> tuple[Meter, query_run.QueryResult]:
        async with state.pool.connection() as conn:
            meter = await _meter_or_404(conn, state.cfg.namespace, request)
            _counts_complete(meter)
            return meter, await query_run.run(conn, meter, params, state.cfg.api.max_query_rows, json_rows=not csv)

    meter, result = await _read(request, answer())
    metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
    if csv:
        return Response(
            query_output.to_csv(result),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{meter.spec.slug}.csv"'},
        )
    return json_response(query_output.to_json(result))


async def openapi_document(_: Request) -> Response:
    text = (resources.files("bp_openmeter") / "openapi.yaml").read_text()
    return Response(text, media_type="application/yaml")


# --- errors ---------------------------------------------------------------------------


async def _problem(_: Request, exc: Problem) -> Response:
    return exc.response()


async def _http_error(_: Request, exc: HTTPException) -> Response:
    return Problem(exc.status_code, exc.detail or "", headers=dict(exc.headers or {})).response()


async def _database_error(_: Request, exc: Exception) -> Response:
    log.warning("database unavailable", error=str(exc).strip() or type(exc).__name__)
    return Problem(503, "the database is unavailable, try again", headers={"Retry-After": "1"}).response()


async def _no_session(request: Request, exc: Exception) -> Response:
    waited = _state(request).pool.timeout
    log.warning("no database session", error=str(exc).strip() or type(exc).__name__)
    return Problem(
        503,
        f"no database session came free within {waited:g} s: PostgreSQL is not answering, or "
        "every session of this process is busy; try again",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    ).response()


async def _database_deadline(request: Request, exc: Exception) -> Response:
    metrics.API_REFUSALS.labels("database_deadline").inc()
    limit = _state(request).cfg.api.database_deadline
    log.warning("database did not answer in time", deadline_s=limit, path=request.url.path)
    return Problem(
        503,
        f"the database did not answer within {limit:g} s (api.databaseDeadline): PostgreSQL is "
        "not answering or overloaded; nothing was changed, try again",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    ).response()


async def _statement_timeout(request: Request, _: Exception) -> Response:
    metrics.API_REFUSALS.labels("statement_timeout").inc()
    limit = _state(request).cfg.api.statement_timeout
    return Problem(
        504,
        f"the database did not answer within {limit:g} s (api.statementTimeout) and the statement "
        "was cancelled; for a meter query, ask for less: a narrower from/to range, a larger "
        "windowSize, fewer subjects or group keys",
    ).response()


async def _client_gone(_: Request, __: Exception) -> Response:
    return Response(status_code=499)  # never sent: the connection is closed (nginx's code, for the record)


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.error("unhandled error", error=repr(exc), exc_info=exc)
    return internal_error().response()


class RefuseNulInQuery:
    """ASGI middleware: asgi_request.nul_in_query's 400 before any route runs."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = nul_in_query(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _by_method(**handlers: Handler) -> Handler:
    """One endpoint per path, so that a 405 lists every method of the path in Allow."""
    if "GET" in handlers:
        handlers.setdefault("HEAD", handlers["GET"])

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method](request)

    return endpoint


def _needs(permission: str | None, handler: Handler) -> Handler:
    """The handler, run only for a caller with the permission (None: any authenticated caller)."""
    if permission is None:
        return handler

    async def guarded(request: Request) -> Response:
        auth.require(request.scope, permission)
        return await handler(request)

    return guarded


# path -> method -> (handler, the permission it needs); the OpenAPI document states the
# same permission per operation (x-permission), and a test holds the two equal.
OPERATIONS: dict[str, dict[str, tuple[Handler, str | None]]] = {
    INGEST_PATH: {"GET": (list_events, "read"), "POST": (ingest_events, "ingest")},
    "/api/v1/meters": {"GET": (list_meters, "read"), "POST": (create_meter, "admin")},
    "/api/v1/meters/{id_or_slug}": {
        "GET": (get_meter, "read"),
        "PUT": (update_meter, "admin"),
        "DELETE": (delete_meter, "admin"),
    },
    "/api/v1/meters/{id_or_slug}/query": {"GET": (query_meter, "read"), "POST": (query_meter, "read")},
    "/api/v1/meters/{id_or_slug}/subjects": {"GET": (meter_subjects, "read")},
    "/api/v1/meters/{id_or_slug}/group-by/{group_by_key}/values": {"GET": (meter_group_values, "read")},
    "/api/v1/openapi.yaml": {"GET": (openapi_document, None)},
}


class ApiApp(Starlette):
    """The API: every POST of events takes the lean path (ingest_path.py), the rest Starlette's routes."""

    def __init__(self, ingest: ASGIApp, **kwargs: Any):
        super().__init__(**kwargs)
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == INGEST_PATH:
            await self.ingest(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def build_app(state: ApiState) -> ApiApp:
    routes = [
        Route(
            path,
            _by_method(**{method: _needs(permission, handler) for method, (handler, permission) in methods.items()}),
            methods=list(methods),
        )
        for path, methods in OPERATIONS.items()
    ]
    # One verifier (its OIDC key cache) and one body budget for both paths.
    verifier = auth.verifier_for(state.cfg.api.auth)
    budget = BodyBudget(state.cfg.api.body_budget_bytes)
    # Who is calling, first: nothing is read for a caller who may not call; then the bodies
    # of those who may, charged to the process's budget.
    middleware = [
        Middleware(auth.BearerAuth, verifier=verifier),
        Middleware(ChargeBodies, budget=budget),
        Middleware(RefuseNulInQuery),
    ]
    # Each handler takes the exception class it is registered for (Starlette calls it so).
    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        Problem: _problem,
        HTTPException: _http_error,
        ClientGone: _client_gone,
        ClientDisconnect: _client_gone,
        psycopg.errors.QueryCanceled: _statement_timeout,
        psycopg.OperationalError: _database_error,
        PoolTimeout: _no_session,
        DatabaseDeadline: _database_deadline,
        Exception: _unexpected,
    }
    ingest = IngestPath(state, OPERATIONS[INGEST_PATH]["POST"][1], verifier, budget)
    app = ApiApp(ingest, routes=routes, middleware=middleware, exception_handlers=handlers)
    # A path with a trailing slash is not one of the API's: 404 problem+json, as any unknown path
    # (a redirect would be undocumented, and its Location would echo the client's Host header).
    app.router.redirect_slashes = False
    app.state.api = state
    return app
