"""The fast dedupe layer: Valkey keys `<namespace>-<source>-<id>` with a TTL.

Keys are read before publishing and written only after JetStream acknowledged, so
a failed publish never marks an event as seen (a client's retry must get through).
Valkey being down degrades dedupe to the JetStream window and the PostgreSQL key,
which still make duplicates harmless; ingest goes on and says so.
"""

from __future__ import annotations

import valkey.asyncio as valkey_async
from valkey.exceptions import ValkeyError

from .config import ValkeyConfig
from .logs import get_logger
from .metrics import DEDUPE_DEGRADED, DEDUPE_ERRORS

log = get_logger("dedupe")


def dedupe_key(namespace: str, source: str, event_id: str) -> str:
    return f"{namespace}-{source}-{event_id}"


class Deduplicator:
    def __init__(self, cfg: ValkeyConfig):
        self.ttl_ms = int(cfg.dedupe_ttl * 1000)
        self.client = None
        if cfg.url:
            self.client = valkey_async.from_url(cfg.url, password=cfg.password or None,
                                                socket_timeout=0.5, socket_connect_timeout=0.5,
                                                health_check_interval=10)
        self.degraded = False

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def _set_degraded(self, degraded: bool, error: Exception | None = None) -> None:
        if degraded != self.degraded:
            if degraded:
                log.warning("dedupe degraded: Valkey unreachable, relying on JetStream and PostgreSQL",
                            error=str(error))
            else:
                log.info("dedupe restored: Valkey reachable again")
        self.degraded = degraded
        DEDUPE_DEGRADED.set(1 if degraded else 0)

    async def seen(self, keys: list[str]) -> list[bool]:
        """Which keys are already marked; all False when Valkey cannot answer."""
        if self.client is None or not keys:
            return [False] * len(keys)
        try:
            values = await self.client.mget(keys)
        except (ValkeyError, OSError) as exc:
            DEDUPE_ERRORS.inc()
            self._set_degraded(True, exc)
            return [False] * len(keys)
        self._set_degraded(False)
        return [value is not None for value in values]

    async def mark(self, keys: list[str]) -> None:
        if self.client is None or not keys:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, b"1", px=self.ttl_ms)
                await pipe.execute()
        except (ValkeyError, OSError) as exc:
            DEDUPE_ERRORS.inc()
            self._set_degraded(True, exc)
            return
        self._set_degraded(False)

    async def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            await self.client.ping()
            return True
        except (ValkeyError, OSError):
            return False

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
