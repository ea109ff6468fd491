"""The OIDC issuer's signing keys (a JWKS), fetched from `api.auth.oidc.jwksUrl` and cached.

Keys are fetched on first use, again when older than MAX_AGE_S, and at once when a
token names a key id the cache does not know (the issuer rotated its keys) — but
at most once per MIN_REFRESH_S, so tokens with made-up key ids cannot make the api
hammer the issuer. When a refresh fails, the keys already known stay in use.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import jwt

from .logs import get_logger

log = get_logger("jwks")

MAX_AGE_S = 600.0
MIN_REFRESH_S = 5.0
FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024


class JwksUnavailable(Exception):
    """No key is known and the JWKS cannot be fetched: tokens cannot be checked at all."""


class JwksCache:
    def __init__(self, url: str):
        self.url = url
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._tried_at = float("-inf")  # last attempt, successful or not
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key with this id (or the only key, for a token without one); None if unknown."""
        if time.monotonic() - self._fetched_at > MAX_AGE_S or (kid not in self._keys and self._may_refresh()):
            await self._refresh()
        if not self._keys:
            raise JwksUnavailable(f"no signing keys could be fetched from {self.url}")
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _may_refresh(self) -> bool:
        return time.monotonic() - self._tried_at >= MIN_REFRESH_S

    async def _refresh(self) -> None:
        async with self._lock:  # one fetch at a time; waiters use its result
            if not self._may_refresh():
                return
            self._tried_at = time.monotonic()
            try:
                document = await asyncio.to_thread(self._fetch)
                keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(document).keys}
            except (OSError, ValueError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
                log.warning(
                    "jwks refresh failed; keeping the keys already known",
                    url=self.url,
                    error=str(exc) or type(exc).__name__,
                    keys_known=len(self._keys),
                )
                return
            self._keys, self._fetched_at = keys, time.monotonic()
            log.info("jwks fetched", url=self.url, key_ids=sorted(str(k) for k in keys))

    def _fetch(self) -> dict:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"JWKS document larger than {MAX_DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("JWKS document is not a JSON object")
        return document
