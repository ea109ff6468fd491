"""uvicorn's HTTP/1.1 protocol with one change: a request it cannot parse gets problem+json.

uvicorn answers a request it cannot parse (malformed, or a request line or header
longer than its parser takes, about 64 KiB) with a text/plain 400 before the app
sees it. The API promises problem+json for every error, so that answer is replaced.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .problems import PROBLEM_CONTENT_TYPE


class ProblemHTTPProtocol(AutoHTTPProtocol):  # httptools when installed, else h11 (as uvicorn's "auto")
    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"type": "about:blank", "title": "Bad Request", "status": 400,
                             "detail": f"{msg.rstrip('.')}: malformed, or a request line or header "
                                       "longer than 64 KiB"})
        head = (f"HTTP/1.1 400 Bad Request\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii")
        self.transport.write(head + body)
        self.transport.close()
