"""Query-string parameters that would be ignored silently are refused instead.

A parameter an operation does not have, or one that takes one value given twice
(`subject=a&subject=b` on the events list), would otherwise be dropped or cut to one
value: a filter that filters nothing, or not what the caller asked. Both are a 400
naming the parameter, on every operation.
"""

from __future__ import annotations

from typing import Iterable

from starlette.datastructures import ImmutableMultiDict

from .problems import bad_request

# A request's query parameters, each name with its values in order (starlette's QueryParams).
Query = ImmutableMultiDict[str, str]


def refuse_unknown(qp: Query, known: Iterable[str], advice: str = "") -> None:
    allowed = set(known)
    for key in qp.keys():
        if key not in allowed:
            raise bad_request(f"{key[:80]}: unknown query parameter{advice}", field=key[:80])


def refuse_repeated(qp: Query, single: Iterable[str]) -> None:
    for name in single:
        given = len(qp.getlist(name))
        if given > 1:
            raise bad_request(f"{name}: given {given} times; it takes one value", field=name)
