"""One budget for the request bodies the api holds at once, across every request.

Each request's body is limited (`api.maxBodyBytes`), but many at once are not: 120
clients each sending 4 MiB and stalling made the process hold half a gigabyte. Every
body chunk the app receives is charged to the budget (`api.bodyBudgetBytes`) and
given back only when the request has been answered, since the parsed events live as
long. A chunk that does not fit answers 503 with Retry-After: the client sends again
once others are done, and nothing of its request was accepted.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .problems import Problem


class BodyBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        metrics.API_BODY_BYTES_HELD.set(self.held)
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
        metrics.API_BODY_BYTES_HELD.set(self.held)


class ChargeBodies:
    """ASGI middleware: charges each received body chunk to the budget, for the request's lifetime."""

    def __init__(self, app: ASGIApp, budget: BodyBudget):
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = 0

        async def charged_receive() -> Message:
            nonlocal held
            message = await receive()
            size = len(message.get("body", b""))
            if size:
                if not self.budget.take(size):
                    metrics.API_REFUSALS.labels("body_budget").inc()
                    raise Problem(
                        503,
                        f"the server holds {self.budget.limit} bytes of request bodies, its limit "
                        "(api.bodyBudgetBytes); nothing of this request was accepted, send it again "
                        "shortly",
                        headers={"Retry-After": "1"},
                    )
                held += size
            return message

        try:
            await self.app(scope, charged_receive, send)
        finally:
            self.budget.give_back(held)
