"""The fast dedupe layer: a Valkey key per event, with a TTL.

An event's key is `event_key(namespace, source, id)`: a digest of the three parts,
each prefixed by its length, so different events never share a key (the earlier
`<namespace>-<source>-<id>` made source `billing-prod` id `X-1` and source `billing`
id `prod-X-1` one key, since `-` may occur inside each part). The same key is the
message's `Nats-Msg-Id` in JetStream (messages.py): fixed length, hex only, whatever
the event's id holds. In Valkey it stands behind `valkey.keyPrefix` (derived from the
instance), so deployments sharing a Valkey never see each other's keys.

Keys written before this encoding (`<namespace>-<source>-<id>`, unprefixed) are never
read again and expire after their TTL; an event of the last TTL sent again passes
Valkey and, within the JetStream duplicate window, the Nats-Msg-Id check too (the old
id had the old form), and is then stopped by the PostgreSQL key: counted once, as
always.

Keys are read before publishing and written only after JetStream acknowledged, so
a failed publish never marks an event as seen (a client's retry must get through).
Valkey being down degrades dedupe to the JetStream window and the PostgreSQL key,
which still make duplicates harmless; ingest goes on and says so. A Valkey that hangs
(a frozen node: connections open, nothing answers) costs a call its whole timeout, so
after a failed call dedupe leaves Valkey alone for `valkey.recheckInterval` and then
lets one request try it again (a circuit breaker): a hung Valkey costs one request per
interval the timeout, not every request. Keys of events taken meanwhile are not
written; a duplicate of one is stopped by JetStream's window or PostgreSQL's key.

A request's keys are checked and marked by one Lua script call each, the keys
joined into one argument by NUL (which no key holds: a hex digest behind a prefix of
printable ASCII): one command of one argument instead of one command or
argument per key keeps the client's cost per event small. Where scripts are not
allowed (an ACL without EVAL), MGET and a SET pipeline do the same.
"""

from __future__ import annotations

import hashlib
import struct
import time

import valkey.asyncio as valkey_async
from valkey.exceptions import ResponseError, ValkeyError

from .config import ValkeyConfig
from .logs import get_logger
from .metrics import DEDUPE_DEGRADED, DEDUPE_ERRORS, DEDUPE_SKIPPED

log = get_logger("dedupe")

# One Valkey call (and connecting) at most; a healthy Valkey on the network answers in
# milliseconds. While Valkey hangs, one request per valkey.recheckInterval waits this long.
VALKEY_TIMEOUT_S = 0.5


# ARGV[1]: the keys joined by NUL. Returns the 1-based positions of the keys that exist
# (usually none: a short answer). One EXISTS per thousand keys answers the usual "none"
# without a call per key; only when some exist are the keys asked one by one.
_SEEN_SCRIPT = """
local keys = {}
for key in string.gmatch(ARGV[1], '[^%z]+') do keys[#keys + 1] = key end
local any = 0
for i = 1, #keys, 1000 do
    any = any + redis.call('EXISTS', unpack(keys, i, math.min(i + 999, #keys)))
end
local found = {}
if any > 0 then
    for i, key in ipairs(keys) do
        if redis.call('EXISTS', key) == 1 then found[#found + 1] = i end
    end
end
return found
"""
# ARGV[1]: the keys joined by NUL; ARGV[2]: the TTL in milliseconds.
_MARK_SCRIPT = """
local n = 0
for key in string.gmatch(ARGV[1], '[^%z]+') do
    redis.call('SET', key, '1', 'PX', ARGV[2])
    n = n + 1
end
return n
"""


def event_key(namespace: str, source: str, event_id: str) -> str:
    """32 hex characters: BLAKE2b-128 of the UTF-8 parts, each prefixed by its length in bytes."""
    ns, src, eid = namespace.encode(), source.encode(), event_id.encode()
    packed = struct.pack(">III", len(ns), len(src), len(eid)) + ns + src + eid
    return hashlib.blake2b(packed, digest_size=16).hexdigest()


class Deduplicator:
    def __init__(self, cfg: ValkeyConfig):
        self.ttl_ms = int(cfg.dedupe_ttl * 1000)
        self.prefix = cfg.key_prefix
        self.recheck_interval = cfg.recheck_interval
        self.client = None
        if cfg.url:
            self.client = valkey_async.from_url(
                cfg.url,
                username=cfg.username or None,
                password=cfg.password or None,
                socket_timeout=VALKEY_TIMEOUT_S,
                socket_connect_timeout=VALKEY_TIMEOUT_S,
                health_check_interval=10,
            )
            self._seen_script = self.client.register_script(_SEEN_SCRIPT)
            self._mark_script = self.client.register_script(_MARK_SCRIPT)
        self.scripts = True
        self.degraded = False
        self.last_error = ""
        self._next_try = 0.0  # monotonic time before which a degraded dedupe leaves Valkey alone

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def valkey_key(self, key: str) -> str:
        return self.prefix + key

    def _set_degraded(self, degraded: bool, error: Exception | None = None) -> None:
        if degraded:
            self.last_error = str(error).strip() or type(error).__name__
            self._next_try = time.monotonic() + self.recheck_interval
        if degraded != self.degraded:
            if degraded:
                log.warning(
                    "dedupe degraded: Valkey unreachable, relying on JetStream and PostgreSQL",
                    error=self.last_error,
                    recheck_in_s=self.recheck_interval,
                )
            else:
                log.info("dedupe restored: Valkey reachable again")
        self.degraded = degraded
        DEDUPE_DEGRADED.set(1 if degraded else 0)

    def _leave_valkey_alone(self) -> bool:
        """While degraded, True until valkey.recheckInterval has passed since the last failure; then
        False once, for the one call that tries Valkey again (the next ones wait for its outcome,
        or for the interval after it)."""
        if not self.degraded:
            return False
        now = time.monotonic()
        if now < self._next_try:
            DEDUPE_SKIPPED.inc()
            return True
        self._next_try = now + self.recheck_interval
        return False

    def degraded_problem(self) -> str | None:
        """What readiness reports: None while Valkey answers (or is not configured)."""
        if not self.degraded:
            return None
        return (
            f"degraded: Valkey did not answer ({self.last_error}); dedupe rests on JetStream's duplicate "
            f"window and PostgreSQL's key, Valkey is tried again every {self.recheck_interval:g} s"
        )

    def _scripts_refused(self, exc: ResponseError) -> bool:
        """A script refused by the server (e.g. an ACL without EVAL): use plain commands from now on."""
        text = str(exc).upper()
        if self.scripts and ("NOPERM" in text or "UNKNOWN COMMAND" in text):
            log.warning("Valkey refuses scripts; dedupe uses MGET and SET pipelines", error=str(exc))
            self.scripts = False
            return True
        return False

    async def seen(self, keys: list[str]) -> list[bool]:
        """Which event keys are already marked; all False when Valkey cannot answer."""
        if self.client is None or not keys or self._leave_valkey_alone():
            return [False] * len(keys)
        keys = [self.prefix + key for key in keys]
        try:
            try:
                if self.scripts:
                    found = [False] * len(keys)
                    for position in await self._seen_script(args=["\0".join(keys)]):
                        found[int(position) - 1] = True
                    values = found
                else:
                    values = [value is not None for value in await self.client.mget(keys)]
            except ResponseError as exc:
                if not self._scripts_refused(exc):
                    raise
                values = [value is not None for value in await self.client.mget(keys)]
        except (ValkeyError, OSError) as exc:
            DEDUPE_ERRORS.inc()
            self._set_degraded(True, exc)
            return [False] * len(keys)
        self._set_degraded(False)
        return values

    async def _mark_pipelined(self, keys: list[str]) -> None:
        assert self.client is not None  # called only with Valkey configured
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, b"1", px=self.ttl_ms)
            await pipe.execute()

    async def mark(self, keys: list[str]) -> None:
        if self.client is None or not keys or self._leave_valkey_alone():
            return
        keys = [self.prefix + key for key in keys]
        try:
            try:
                if self.scripts:
                    await self._mark_script(args=["\0".join(keys), self.ttl_ms])
                else:
                    await self._mark_pipelined(keys)
            except ResponseError as exc:
                if not self._scripts_refused(exc):
                    raise
                await self._mark_pipelined(keys)
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
