"""How a JSON value reads as a group or UNIQUE_COUNT value: the engine's SQL against upstream's
ClickHouse JSON_VALUE over the data its ingest stores, for 10,000 seeded numbers.

The query matrix meets only the values the scenario sends; this compares the reading
itself over numbers of every magnitude and spelling (whole, decimal, exponent, float64's
extremes), and over the other JSON types. Whole numbers beyond 2^53 keep their digits on
purpose (deliberate.py `exact_integers`): upstream's side is read from `data_exact`.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from bp_openmeter.migrate import apply_migrations
from testkit.compat.gojson import RawNumber, client_json, go_json
from testkit.compat.upstream import literal
from testkit.stack.local import create_database

pytestmark = pytest.mark.servers


def _numbers(rng: random.Random, count: int) -> list[RawNumber]:
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.25:  # any finite float64, written shortest
            number = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if number != number or abs(number) == float("inf"):
                continue
            out.append(RawNumber(repr(number)))
        elif roll < 0.5:  # decimals of a few digits at every scale
            digits = rng.randint(1, 10 ** rng.randint(1, 17))
            out.append(RawNumber(f"{'-' if rng.random() < 0.2 else ''}{digits}e{rng.randint(-30, 25)}"))
        elif roll < 0.55:  # powers of two from 2^53 up and their neighbours (float64's gaps change there)
            power = 2 ** rng.randint(53, 1000)
            out.append(RawNumber(str(power + rng.choice((-1, 0, 1)) * rng.randint(0, power >> 50))))
        elif roll < 0.7:  # whole numbers, around 2^53 and 2^64 too
            magnitude = rng.choice((10 ** rng.randint(0, 25), 2**53, 2**63, 2**64))
            out.append(RawNumber(str(rng.randint(-magnitude, magnitude))))
        else:  # plain decimals as clients write them, trailing zeros included
            scale = rng.randint(0, 8)
            out.append(RawNumber(f"{Decimal(rng.randint(0, 10**9)).scaleb(-scale):f}"))
    return out


OTHERS = [
    '"eu"',
    '""',
    '"null"',
    "null",
    "true",
    "false",
    '{"k":1}',
    "[1,2]",
    '"\\u00e9<&>"',
    '" 7 "',
    "1.0",
    "-0",
    "1E2",
    "0.0001",
    "0.001",
    "1e-7",
    "1e21",
    "1e-400",
    "12345678901234567.5",
    "5e-324",
    "1.7976931348623157e308",
]


def test_values_read_as_upstream_reads_them(servers, upstream_store, tmp_path: Path):
    url = create_database(servers.postgres_url, f"values_{uuid.uuid4().hex[:8]}")
    apply_migrations(url)
    texts = OTHERS + [n.text for n in _numbers(random.Random(20251026), 10000)]
    with psycopg.connect(url) as conn:
        engine = [
            row[0]
            for row in conn.execute(
                "SELECT bpom_value_text((t.doc::jsonb) -> 'v') FROM unnest(%s::text[]) WITH ORDINALITY AS t(doc, i) "
                "ORDER BY t.i",
                ([f'{{"v":{text}}}' for text in texts],),
            ).fetchall()
        ]
    stored = []
    for text in texts:
        value = RawNumber(text) if text[0] in "-0123456789" else json.loads(text)
        stored.append(go_json({"v": value}, exact_integers=True))
    upstream = []
    for start in range(0, len(stored), 1000):  # statements of a bounded size
        array = ", ".join(literal(text) for text in stored[start : start + 1000])
        upstream += [
            row[0]
            for row in upstream_store.query(f"SELECT JSON_VALUE(d, '$.v') FROM (SELECT arrayJoin([{array}]) AS d)").rows
        ]
    wrong = [(t, s, e, u) for t, s, e, u in zip(texts, stored, engine, upstream) if e != u]
    assert not wrong, (
        "\n".join(f"sent {t}: upstream stores {s} and reads {u!r}, the engine reads {e!r}" for t, s, e, u in wrong[:20])
        + f"\n({len(wrong)} of {len(texts)} values read another way)"
    )


def test_the_kit_writes_what_a_client_sends():
    assert client_json({"v": RawNumber("1E2"), "s": "é"}) == '{"v":1E2,"s":"é"}'
