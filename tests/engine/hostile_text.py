"""Texts that are hard on storage: exact UTF-8 byte sizes, every Unicode plane, no repeats.

PostgreSQL compresses a long index value when it can, so a text made of one repeated
character fits where a random one of the same size does not: these texts are random
(from a seed, so a failure reproduces), and so as incompressible as text gets.
"""

from __future__ import annotations

import random

# Characters by their UTF-8 size, from every plane that has assigned or usable code
# points: Latin and Greek (2 bytes), combining marks and right-to-left scripts (2), CJK,
# the RLO/RLM controls and the BMP's private use (3), emoji, CJK extension B, plane 3,
# tags and the supplementary private use planes 15 and 16 (4). No NUL, no surrogates.
RANGES = {
    1: [(0x21, 0x7E)],
    2: [(0x00C0, 0x024F), (0x0300, 0x036F), (0x0370, 0x03FF), (0x0590, 0x05FF), (0x0600, 0x06FF)],
    3: [(0x0800, 0x08FF), (0x200E, 0x200F), (0x202A, 0x202E), (0x4E00, 0x9FFF), (0xE000, 0xF8FF), (0xAC00, 0xD7A3)],
    4: [
        (0x1F300, 0x1FAFF),
        (0x20000, 0x2A6DF),
        (0x30000, 0x3134F),
        (0xE0020, 0xE007F),
        (0xF0000, 0xFFFFD),
        (0x100000, 0x10FFFD),
    ],
}


def char(rng: random.Random, width: int) -> str:
    low, high = rng.choice(RANGES[width])
    return chr(rng.randint(low, high))


def text_of_bytes(size: int, seed: int, widths: tuple[int, ...] = (1, 2, 3, 4)) -> str:
    """A random text of exactly `size` bytes of UTF-8, of characters of the given widths
    (1-byte characters fill what wider ones cannot)."""
    rng = random.Random(seed)
    parts, left = [], size
    while left > 0:
        width = rng.choice([w for w in widths if w <= left] or [1])
        parts.append(char(rng, width))
        left -= width
    text = "".join(parts)
    assert len(text.encode()) == size
    return text


def url_of_chars(length: int, seed: int) -> str:
    """A plain-ASCII URL of `length` characters, random after its host: what an HTTP
    gateway reports as a request's path, long by accident."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/?=&%"
    head = "https://api.example.com/v1/"
    return head + "".join(rng.choice(alphabet) for _ in range(length - len(head)))
