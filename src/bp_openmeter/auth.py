"""Optional API authentication (`api.auth.mode`): static bearer tokens, or OIDC access tokens.

`token`: the bearer token must equal one of BPOM_API_TOKENS. Each comparison is of
SHA-256 digests with hmac.compare_digest, over every configured token, so timing
tells nothing about which token or how much of it matched.

`oidc`: the bearer token is a JWT (e.g. a client-credentials access token) signed by
a key of the issuer's JWKS with an asymmetric algorithm, from `issuer`, for
`audience` when one is configured, not expired; with `requiredScope`, its `scope`
(or `scp`) claim must contain that scope, else 403.

An ASGI middleware in front of the API app only: it decides before any body is
read, and the telemetry port (metrics, health) has no authentication. Tokens are
never logged; failures are counted in bpom_auth_failures_total by reason.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import jwt
from starlette.datastructures import Headers

from .config import AuthConfig, OidcConfig
from .jwks import JwksCache, JwksUnavailable
from .metrics import AUTH_FAILURES
from .problems import Problem

REALM = "bp-openmeter"
# Asymmetric only: with a public JWKS, an HMAC algorithm would let anyone sign.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 30


class Denied(Exception):
    def __init__(self, status: int, reason: str, detail: str, error: str | None = None, scope: str | None = None):
        super().__init__(detail)
        self.status, self.reason, self.detail, self.error, self.scope = status, reason, detail, error, scope

    def problem(self) -> Problem:
        challenge = f'Bearer realm="{REALM}"'
        if self.error:
            challenge += f', error="{self.error}", error_description="{_quotable(self.detail)}"'
        if self.scope:
            challenge += f', scope="{_quotable(self.scope)}"'
        return Problem(self.status, self.detail, headers={"WWW-Authenticate": challenge})


def _quotable(text: str) -> str:
    """What may stand inside a quoted header parameter: printable ASCII without quote or backslash."""
    return re.sub(r'[^\x20-\x7e]|["\\]', "", text)


def _invalid(reason: str, detail: str) -> Denied:
    return Denied(401, reason, detail, error="invalid_token")


class StaticTokens:
    def __init__(self, tokens: tuple[str, ...]):
        self._digests = [hashlib.sha256(token.encode()).digest() for token in tokens]

    async def verify(self, token: str) -> None:
        given = hashlib.sha256(token.encode()).digest()
        matched = False
        for digest in self._digests:     # no early exit: every token is compared
            matched |= hmac.compare_digest(given, digest)
        if not matched:
            raise _invalid("unknown_token", "the bearer token is not valid")


class OidcTokens:
    def __init__(self, cfg: OidcConfig, keys: JwksCache | None = None):
        self.cfg = cfg
        self.keys = keys or JwksCache(cfg.jwks_url)

    async def verify(self, token: str) -> None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise _invalid("malformed", "the bearer token is not a JWT") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise _invalid("algorithm", f"tokens signed with {str(algorithm)[:20]!r} are not accepted")
        key = await self.keys.key(header.get("kid") if isinstance(header.get("kid"), str) else None)
        if key is None:
            raise _invalid("unknown_key", "the token's signing key is not in the issuer's key set")
        if key.algorithm_name and key.algorithm_name != algorithm:
            raise _invalid("algorithm", "the token's algorithm does not match its key")
        try:
            claims = jwt.decode(token, key=key.key, algorithms=[algorithm], issuer=self.cfg.issuer,
                                audience=self.cfg.audience or None, leeway=LEEWAY_S,
                                options={"require": ["exp", "iss"], "verify_aud": bool(self.cfg.audience)})
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("expired", "the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise _invalid("audience", "the token is not for this audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise _invalid("issuer", "the token is from another issuer") from exc
        except jwt.InvalidTokenError as exc:
            raise _invalid("invalid", f"the token is not valid: {type(exc).__name__}") from exc
        if self.cfg.required_scope and self.cfg.required_scope not in _scopes(claims):
            raise Denied(403, "scope", f"the token lacks the scope {self.cfg.required_scope!r}",
                         error="insufficient_scope", scope=self.cfg.required_scope)


def _scopes(claims: dict) -> set[str]:
    """OAuth 2 puts scopes in `scope` (space-separated); some issuers use `scp` (a list or a string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def verifier_for(cfg: AuthConfig):
    if cfg.mode == "token":
        return StaticTokens(cfg.tokens)
    if cfg.mode == "oidc":
        return OidcTokens(cfg.oidc)
    return None


class BearerAuth:
    """ASGI middleware: every request on the API port needs `Authorization: Bearer <token>`."""

    def __init__(self, app, verifier):
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.verifier.verify(_bearer_token(Headers(scope=scope).get("authorization")))
        except Denied as denied:
            AUTH_FAILURES.labels(denied.reason).inc()
            await denied.problem().response()(scope, receive, send)
            return
        except JwksUnavailable:
            AUTH_FAILURES.labels("jwks_unavailable").inc()
            problem = Problem(503, "tokens cannot be checked: the issuer's keys are unavailable",
                              headers={"Retry-After": "5"})
            await problem.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer_token(header: str | None) -> str:
    if not header:
        raise Denied(401, "missing", "this API needs a bearer token (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _invalid("malformed", "the Authorization header must be 'Bearer <token>'")
    return token.strip()
