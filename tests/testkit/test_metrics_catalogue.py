"""docs/operations.md catalogues every bpom_* metric of src/bp_openmeter/metrics.py, with its
type and labels, and names no metric that does not exist."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from bp_openmeter import metrics
from testkit.paths import DOCS

OPERATIONS = DOCS / "operations.md"
START, END = "<!-- metrics-catalogue:start -->", "<!-- metrics-catalogue:end -->"
ROW = re.compile(r"^\|\s*`(?P<name>[^`]+)`\s*\|\s*(?P<type>[a-z]+)\s*\|(?P<labels>[^|]*)\|")


def engine_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name -> (type, label names) of every metric metrics.py defines."""
    found = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        (family,) = value.describe()
        # A counter's family is named without the suffix its samples are exposed with.
        name = family.name + "_total" if family.type == "counter" else family.name
        # The label names a metric was declared with; prometheus_client has no public reader of them.
        found[name] = (family.type, tuple(value._labelnames))
    return found


def catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Name -> (type, label names) of each row between the catalogue's markers."""
    text = OPERATIONS.read_text()
    assert START in text and END in text, f"docs/operations.md needs the {START} ... {END} block"
    rows = {}
    for line in text.split(START, 1)[1].split(END, 1)[0].splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        assert match["name"] not in rows, f"docs/operations.md lists {match['name']} twice"
        rows[match["name"]] = (match["type"], tuple(re.findall(r"`([^`]+)`", match["labels"])))
    return rows


def test_engine_defines_metrics_of_its_own_prefix():
    names = engine_metrics()
    assert names, "no metric found in bp_openmeter.metrics"
    assert all(name.startswith("bpom_") for name in names), sorted(names)


def test_every_metric_is_catalogued_and_every_catalogued_metric_exists():
    defined, listed = engine_metrics(), catalogue()
    missing = sorted(set(defined) - set(listed))
    unknown = sorted(set(listed) - set(defined))
    assert not missing, f"docs/operations.md 'Metrics' lacks a row for {missing} (defined in metrics.py)"
    assert not unknown, f"docs/operations.md 'Metrics' lists {unknown}, which metrics.py does not define"


def test_catalogue_gives_each_metric_its_type_and_labels():
    defined, listed = engine_metrics(), catalogue()
    wrong = {
        name: {"catalogue": listed[name], "metrics.py": defined[name]}
        for name in defined.keys() & listed.keys()
        if listed[name] != defined[name]
    }
    assert not wrong, f"docs/operations.md gives these metrics another (type, labels) than metrics.py: {wrong}"
