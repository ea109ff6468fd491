"""ULIDs for meter ids (upstream OpenMeter uses ULIDs): 48-bit milliseconds + 80 random bits."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def new_ulid(now_ms: int | None = None) -> str:
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def looks_like_ulid(text: str) -> bool:
    return len(text) == 26 and all(ch in _ALPHABET for ch in text.upper())
