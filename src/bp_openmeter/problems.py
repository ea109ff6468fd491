"""RFC 7807 problem details: every error the API returns has this shape."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request; the app turns it into application/problem+json."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"type": "about:blank", "title": self.title, "status": self.status, "detail": self.detail, **self.extra}

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()), status_code=self.status, media_type=PROBLEM_CONTENT_TYPE, headers=self.headers
        )


def bad_request(detail: str, **extra: Any) -> Problem:
    return Problem(400, detail, extra=extra or None)


def not_found(detail: str) -> Problem:
    return Problem(404, detail)


def internal_error() -> Problem:
    """What a request that failed in an unforeseen way is answered (the log has the error)."""
    return Problem(500, "internal error; the server log has details")
