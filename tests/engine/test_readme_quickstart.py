"""README's quick start: the event it posts is counted by every meter of its type that the
stack declares (fixtures/meters.yaml), the meters its queries name among them. Before, the
example sent `psu` where the distinct-PSU meter reads `$.psu_id`: never counted there."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from testkit.client import SINGLE, OpenMeterClient
from testkit.paths import FIXTURES, README
from testkit.quickstart import QUICKSTART_EVENT

pytestmark = pytest.mark.servers

METERS = yaml.safe_load((FIXTURES / "meters.yaml").read_text())


def _readme_example() -> tuple[dict, set[str]]:
    """The event README's quick start posts, and the meters its queries name."""
    readme = README.read_text()
    section = readme[readme.index("## Run it locally") :]
    section = section[: section.index("\n## ", 1)]
    body = re.search(r"curl -si -X POST \S+/api/v1/events .*?-d '([^']*)'", section, re.DOTALL)
    assert body, "README's quick start posts no event"
    return json.loads(body.group(1)), set(re.findall(r"/api/v1/meters/(\w+)/query", section))


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(meters=METERS)


def test_the_stack_prints_the_readme_example():
    event, _ = _readme_example()
    assert event == QUICKSTART_EVENT


def test_every_meter_of_its_type_counts_the_readme_example(stack):
    event, queried = _readme_example()
    of_its_type = {meter["slug"]: meter for meter in METERS if meter["eventType"] == event["type"]}
    assert queried and queried <= set(of_its_type), (queried, sorted(of_its_type))
    data = event["data"]
    expected = {
        "COUNT": 1,
        "UNIQUE_COUNT": 1,
        **{aggregation: data["latency_ms"] for aggregation in ("SUM", "AVG", "MIN", "MAX", "LATEST")},
    }
    with OpenMeterClient(stack.api_url) as client:
        response = client.http.post("/api/v1/events", content=json.dumps(event), headers={"content-type": SINGLE})
        assert response.status_code == 204, response.text
        [stored] = client.wait_stored(event["id"], 1)
        assert "validationError" not in stored, stored["validationError"]
        for slug, meter in of_its_type.items():
            if meter.get("valueProperty"):
                assert meter["valueProperty"].removeprefix("$.") in data, f"{slug} reads {meter['valueProperty']}"
            answer = client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] != 0)
            assert [row["value"] for row in answer["data"]] == [expected[meter["aggregation"]]], slug
