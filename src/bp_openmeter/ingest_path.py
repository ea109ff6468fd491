"""The lean path of POST /api/v1/events: plain ASGI, past Starlette's middleware and router.

Many clients posting one event each make the API's cost per request its cost per event,
and Starlette's stack (error middleware, exception middleware, router, Request and
Response objects, a send wrapper per layer) was about half of it. This path keeps what
a request of events goes through there, in the same order, with the same answers:
authentication (BearerAuth, the same verifier), the process's body budget (ChargeBodies,
the same budget), the NUL-in-query refusal, the route's permission, then the body's
bounds (asgi_request.receive_body), validation, and the publish that makes the events
durable before the 204. Every refusal is the same problem+json; an unforeseen error is
logged and answered 500; a client that left is not answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from . import auth, metrics
from .asgi_request import header, nul_in_query, receive_body
from .body_budget import BodyBudget, ChargeBodies
from .bus import BusUnavailable
from .cloudevents_in import parse_body
from .disconnect import ClientGone
from .logs import get_logger
from .problems import Problem, internal_error
from .query_string import refuse_unknown
from .timefmt import utcnow

if TYPE_CHECKING:
    from .api import ApiState

log = get_logger("api")

INGEST_PATH = "/api/v1/events"

# nginx's code for a request whose client closed the connection; never sent, only counted.
CLIENT_LEFT = 499

_NO_CONTENT = {"type": "http.response.start", "status": 204, "headers": []}
_NO_BODY = {"type": "http.response.body", "body": b""}


async def ingest_request(state: "ApiState", scope: Scope, receive: Receive) -> None:
    """A request of events past authentication: read, validate and publish its events, durable
    when this returns (204); a Problem otherwise. Counted in bpom_ingest_requests_total by status."""
    status = 500
    try:
        # It takes no parameters: one given would be dropped silently (query_string.py). Parsed
        # only when there is a query string: most posts have none.
        if scope.get("query_string"):
            refuse_unknown(QueryParams(scope["query_string"]), ())
        body = await receive_body(scope, receive, state.cfg.api.max_body_bytes, state.cfg.api.body_timeout)
        events = parse_body(
            body,
            header(scope, b"content-type"),
            utcnow(),
            state.cfg.api.max_batch_events,
            state.cfg.api.event_time,
            state.cfg.retention.raw_events,
            state.horizon.raw_from,
        )
        try:
            await state.ingestor.ingest(events)
        except BusUnavailable as exc:
            log.warning("ingest refused: event bus unavailable", error=str(exc), events=len(events))
            # A PubAck that did not come in time may still follow the publish: the events may be
            # stored. What is true either way: a retry of the same events counts each once.
            raise Problem(
                503,
                f"the event bus did not acknowledge the request ({exc}): its events may or may "
                "not have been stored; send the same request again (the same source and id), "
                "each event counts once",
                headers={"Retry-After": "1"},
            ) from exc
        status = 204
    except Problem as problem:
        status = problem.status
        if problem.status < 500:
            metrics.INGEST_EVENTS.labels("rejected").inc()
        raise
    except (ClientDisconnect, ClientGone):
        status = CLIENT_LEFT  # not a server error: the client hung up before its answer
        raise
    finally:
        metrics.INGEST_REQUESTS.labels(str(status)).inc()


class IngestPath:
    """ASGI app of POST /api/v1/events: the API's middleware in its order, then the handler."""

    def __init__(self, state: "ApiState", permission: str | None, verifier: auth.Verifier, budget: BodyBudget):
        self.state = state
        self.permission = permission
        self.chain = auth.BearerAuth(ChargeBodies(self._handle, budget), verifier)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.chain(scope, receive, send)
        except Exception as exc:  # raised before any answer (the handler answers its own errors)
            await _unexpected(exc, scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            refusal = nul_in_query(scope)
            if refusal is not None:
                raise refusal
            if self.permission is not None:
                auth.require(scope, self.permission)
            await ingest_request(self.state, scope, receive)
        except Problem as problem:
            await problem.response()(scope, receive, send)
            return
        except (ClientDisconnect, ClientGone):
            return  # the connection is closed: nobody is left to answer
        except Exception as exc:  # whatever else failed is this request's 500
            await _unexpected(exc, scope, receive, send)
            return
        await send(_NO_CONTENT)
        await send(_NO_BODY)


async def _unexpected(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    log.error("unhandled error", error=repr(exc), exc_info=exc)
    await internal_error().response()(scope, receive, send)
