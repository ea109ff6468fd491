"""Equality-based label selectors (`a=b,c=d`), as fixtures/platform.yaml writes them.

Standard library only: the prerequisite check loads fixtures/platform.yaml before
anything else is installed.
"""

from __future__ import annotations

from typing import Mapping


def parse_selector(selector: str) -> dict[str, str]:
    """The selector as a label map; set-based terms (`in`, `!=`, `!key`) are refused."""
    labels = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or not key or key.endswith("!") or key.startswith("!") or value.startswith("=") or " " in key:
            raise ValueError(f"selector term {term!r}: only key=value terms are supported")
        labels[key] = value.strip()
    if not labels:
        raise ValueError(f"selector {selector!r} selects everything; name at least one label")
    return labels


def selector_matches(selector: str | Mapping[str, str], labels: Mapping[str, str]) -> bool:
    wanted = parse_selector(selector) if isinstance(selector, str) else selector
    return all(labels.get(k) == v for k, v in wanted.items())
