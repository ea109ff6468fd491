"""An OIDC issuer's key endpoint for tests: a real HTTP server on loopback serving a JWKS
of keys generated here, and the tokens those keys sign.

The engine fetches the keys over HTTP like from any issuer; nothing of its validator
is replaced. Keys can be rotated and the server stopped, and it counts its fetches.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.example/realms/platform"
AUDIENCE = "bp-openmeter"


class SigningKey:
    def __init__(self, kind: str = "RS256", kid: str | None = None):
        self.algorithm = kind
        self.kid = kid or uuid.uuid4().hex[:12]
        if kind.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP256R1())
            public = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwk = {**public, "kid": self.kid, "use": "sig", "alg": kind}

    def token(self, *, expires_in: float = 300, kid: str | None = None, headers: dict | None = None, **claims) -> str:
        """A client-credentials style access token; claims override the defaults (None removes one)."""
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "service-account-metering",
            "azp": "metering-client",
            "iat": now,
            "exp": now + int(expires_in),
            "scope": "metering profile",
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body, self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid, **(headers or {})}
        )


class JwksServer:
    def __init__(self, keys: list[SigningKey]):
        self.keys = list(keys)
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.fetches += 1
                body = json.dumps({"keys": [key.jwk for key in server.keys]}).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
