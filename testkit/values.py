"""Chart values as helm combines them: one merge, helm's semantics, for every tier.

merge_values({"a": {"b": 1, "c": 2}}, {"a": {"c": None, "d": 3}}) == {"a": {"b": 1, "d": 3}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def merge_values(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, anything else replaces, null deletes the key."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: value paths as fixtures/platform.yaml writes them, as a values map."""
    out: dict[str, Any] = {}
    for path, value in dotted.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"value path {path!r} crosses a non-map value")
        node[parts[-1]] = value
    return out


def write_values(path: Path, values: Mapping[str, Any]) -> Path:
    """Values as a file for `helm --values` (JSON is YAML), so no value is ever spliced into a command line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path
