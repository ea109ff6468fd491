"""The differential tier's kit: the engine's answers against upstream OpenMeter's own SQL.

    scenario.py        the seeded seasons: meters, and events of every shape (sent in order)
    gojson.py          event data as upstream stores it (Go's JSON re-encoding)
    upstream_store.py  upstream's raw events table in embedded ClickHouse (chdb), loaded
    upstream.py        upstream's meter query re-expressed: HTTP checks, SQL, connector rows
    deliberate.py      the engine's deliberate differences, as named adjustments of upstream's reading
    matrix.py          the query matrix (window sizes x zones x ranges x grouping x filters)
    differential.py    one query asked of both sides, compared, reported

`nox -s compat` runs the full matrix; plain `nox` runs a lighter one (`depth()`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Depth:
    name: str
    per_cell: int  # queries per (meter, window size, zone); 9 meters x 5 sizes x 4 zones = 180 cells
    attribute_every: int  # count which deliberate difference changed the answer of every n-th query (0: never)
    min_queries: int  # per season


DEPTHS = {
    "full": Depth("full", per_cell=7, attribute_every=1, min_queries=1260),
    "light": Depth("light", per_cell=2, attribute_every=4, min_queries=360),
}


def depth() -> Depth:
    """BPOM_COMPAT_DEPTH=full|light (default light: the default `nox` run)."""
    name = os.environ.get("BPOM_COMPAT_DEPTH", "light")
    if name not in DEPTHS:
        raise ValueError(f"BPOM_COMPAT_DEPTH={name!r}: must be one of {', '.join(DEPTHS)}")
    return DEPTHS[name]
