"""Optional API authentication (`api.auth.mode`): static bearer tokens, or OIDC access tokens.

`token`: the bearer token must equal one of BPOM_API_TOKENS (admin),
BPOM_API_INGEST_TOKENS or BPOM_API_READ_TOKENS. Each comparison is of SHA-256 digests
with hmac.compare_digest, over every configured token, so timing tells nothing about
which token or how much of it matched.

`oidc`: the bearer token is a JWT (e.g. a client-credentials access token) signed by
a key of the issuer's JWKS with an asymmetric algorithm, from `issuer`, for
`audience` when one is configured, not expired; with `requiredScope`, its `scope`
(or `scp`) claim must contain that scope, else 403. Its permissions: the configured
defaults plus those its scopes grant (`permissionScopes`).

An ASGI middleware in front of the API app only: it decides who is calling before any
body is read and puts what the caller may do into the request scope; each route then
demands its permission (`require`), 403 when it is missing. The telemetry port
(metrics, health) has no authentication. Tokens are never logged; failures are
counted in bpom_auth_failures_total by reason.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, MutableMapping, Protocol

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from .asgi_request import header
from .config import PERMISSIONS, AuthConfig, OidcConfig
from .jwks import JwksCache, JwksUnavailable
from .metrics import AUTH_FAILURES
from .problems import Problem

REALM = "bp-openmeter"
# Asymmetric only: with a public JWKS, an HMAC algorithm would let anyone sign.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 30
# Where the middleware leaves the caller's Grant in the ASGI scope.
GRANT_KEY = "bp_openmeter.grant"


def implied(permissions: Iterable[str]) -> frozenset[str]:
    """admin may do everything (tokens from before permissions existed are admin tokens)."""
    granted = frozenset(permissions)
    return frozenset(PERMISSIONS) if "admin" in granted else granted


@dataclass(frozen=True)
class Grant:
    """What the caller may do; `scopes` names the OIDC scope of each permission (for a 403's challenge)."""

    permissions: frozenset[str]
    scopes: Mapping[str, str] = field(default_factory=dict)


EVERYTHING = Grant(frozenset(PERMISSIONS))


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


class Verifier(Protocol):
    """What a mode checks: the caller's grant from the Authorization header, or Denied."""

    async def grant(self, authorization: str | None) -> Grant: ...


class OpenAccess:
    """api.auth.mode none: every caller may do everything."""

    async def grant(self, _authorization: str | None) -> Grant:
        return EVERYTHING


class StaticTokens:
    def __init__(self, cfg: AuthConfig):
        self._digests = [
            (hashlib.sha256(token.encode()).digest(), permission) for token, permission in cfg.token_grants()
        ]

    async def grant(self, authorization: str | None) -> Grant:
        given = hashlib.sha256(_bearer_token(authorization).encode()).digest()
        granted = set()
        for digest, permission in self._digests:  # no early exit: every token is compared
            if hmac.compare_digest(given, digest):
                granted.add(permission)
        if not granted:
            raise _invalid("unknown_token", "the bearer token is not valid")
        return Grant(implied(granted))


class OidcTokens:
    def __init__(self, cfg: OidcConfig, keys: JwksCache | None = None):
        self.cfg = cfg
        self.keys = keys or JwksCache(cfg.jwks_url)

    async def grant(self, authorization: str | None) -> Grant:
        token = _bearer_token(authorization)
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
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                issuer=self.cfg.issuer,
                audience=self.cfg.audience or None,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss"], "verify_aud": bool(self.cfg.audience)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("expired", "the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise _invalid("audience", "the token is not for this audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise _invalid("issuer", "the token is from another issuer") from exc
        except jwt.InvalidTokenError as exc:
            raise _invalid("invalid", f"the token is not valid: {type(exc).__name__}") from exc
        scopes = _scopes(claims)
        if self.cfg.required_scope and self.cfg.required_scope not in scopes:
            raise Denied(
                403,
                "scope",
                f"the token lacks the scope {self.cfg.required_scope!r}",
                error="insufficient_scope",
                scope=self.cfg.required_scope,
            )
        by_scope = {permission for permission, scope in self.cfg.permission_scopes.items() if scope in scopes}
        return Grant(implied({*self.cfg.default_permissions, *by_scope}), self.cfg.permission_scopes)


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


def verifier_for(cfg: AuthConfig) -> Verifier:
    if cfg.mode == "token":
        return StaticTokens(cfg)
    if cfg.mode == "oidc":
        return OidcTokens(cfg.oidc)
    return OpenAccess()


# What each permission allows, for a 403's detail.
_ALLOWS = {"ingest": "post events", "read": "read events, meters and usage", "admin": "create, change or delete meters"}


def require(scope: MutableMapping[str, Any], permission: str) -> None:
    """403 problem+json unless the caller's grant (set by BearerAuth) includes the permission."""
    grant: Grant = scope[GRANT_KEY]  # a KeyError (500) if the middleware is missing: fail closed
    if permission in grant.permissions:
        return
    AUTH_FAILURES.labels("permission").inc()
    needed = grant.scopes.get(permission)
    via = f" (the scope {needed!r})" if needed else ""
    raise Denied(
        403,
        "permission",
        f"this token may not {_ALLOWS[permission]}: that needs the {permission!r} permission{via}",
        error="insufficient_scope",
        scope=needed,
    ).problem()


class BearerAuth:
    """ASGI middleware: who is calling, decided before anything else, and what they may do.

    Outside mode none, every request on the API port needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, verifier: Verifier):
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            scope[GRANT_KEY] = await self.verifier.grant(header(scope, b"authorization"))
        except Denied as denied:
            AUTH_FAILURES.labels(denied.reason).inc()
            await denied.problem().response()(scope, receive, send)
            return
        except JwksUnavailable:
            AUTH_FAILURES.labels("jwks_unavailable").inc()
            problem = Problem(
                503, "tokens cannot be checked: the issuer's keys are unavailable", headers={"Retry-After": "5"}
            )
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
