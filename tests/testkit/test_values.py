"""One values merge for every tier, with helm's semantics."""

from __future__ import annotations

import json

import pytest

from testkit.values import merge_values, nested, write_values


def test_maps_merge_key_by_key_and_anything_else_replaces():
    base = {"a": {"b": 1, "c": {"d": 2}}, "list": [1, 2], "s": "x"}
    merged = merge_values(base, {"a": {"c": {"e": 3}}, "list": [3], "s": {"now": "a map"}})
    assert merged == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "list": [3], "s": {"now": "a map"}}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "list": [1, 2], "s": "x"}, "the inputs are not changed"


def test_null_deletes_the_key_as_helm_does():
    assert merge_values({"a": {"b": 1, "c": 2}, "d": 4}, {"a": {"c": None}, "d": None, "e": None}) == {"a": {"b": 1}}


def test_nested_turns_value_paths_into_maps():
    assert nested({"image.repository": "r", "image.tag": "t", "hpa.enabled": True}) == {
        "image": {"repository": "r", "tag": "t"},
        "hpa": {"enabled": True},
    }
    with pytest.raises(ValueError, match="crosses a non-map value"):
        nested({"a": 1, "a.b": 2})


def test_values_files_are_json_helm_reads_as_yaml(tmp_path):
    path = write_values(tmp_path / "deep" / "r.values.yaml", {"b": 1, "a": {"c": [1]}})
    assert json.loads(path.read_text()) == {"a": {"c": [1]}, "b": 1}
