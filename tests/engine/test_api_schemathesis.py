"""schemathesis against the engine's own OpenAPI document (the package's openapi.yaml, which
the api serves at /api/v1/openapi.yaml: test_openapi_document checks they are the same).

Every operation gets schema-valid and schema-violating requests; every answer must
be a documented status with a documented body (problem+json for errors), never a
5xx, within the request timeout. Events of refused ingest requests must not be
stored: the last test compares what was answered with what the database holds.
"""

from __future__ import annotations

import os
from importlib import resources

import orjson
import psycopg
import pytest
import schemathesis
import yaml
from schemathesis.config._checks import NegativeDataRejectionConfig
from schemathesis.core import NOT_SET
from hypothesis import HealthCheck, settings

from tests.engine.client import EngineClient, event

pytestmark = pytest.mark.servers

MAX_EXAMPLES = int(os.environ.get("BPOM_FUZZ_EXAMPLES", "60"))
ANSWERED: dict[str, set[tuple[str, str]]] = {"accepted": set(), "refused": set()}

schema = schemathesis.openapi.from_dict(
    yaml.safe_load((resources.files("bp_openmeter") / "openapi.yaml").read_text()))
schema.config.generation.update(max_examples=MAX_EXAMPLES, modes=[schemathesis.GenerationMode.POSITIVE,
                                                                  schemathesis.GenerationMode.NEGATIVE])
# Rules between values (from before to, group keys the meter has, a valueProperty only
# for aggregations other than COUNT) are not in the schema: a schema-valid request may
# rightly get 400, so "positive data accepted" cannot hold.
schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])
# A schema-violating request must be refused with a client error: 413 for a batch over
# maxItems is one. A 5xx is not a refusal (the default list counts it as one).
schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
    expected_statuses=[400, 401, 403, 404, 405, 409, 413, 415])


@pytest.fixture(scope="module")
def seeded(stack):
    """The document's example meter exists with an event, so the example phase reaches real queries."""
    with EngineClient(stack.api_url) as client:
        client.create_meter(slug="tokens_total", eventType="prompt", aggregation="SUM", valueProperty="$.tokens",
                            groupBy={"model": "$.model"})
        client.ingest(event("seed-1", "prompt", "customer-1", data={"tokens": 3, "model": "m"}))
    return stack


def _event_keys(body) -> set[tuple[str, str]]:
    events = body if isinstance(body, list) else [body]
    return {(e["source"], e["id"]) for e in events
            if isinstance(e, dict) and isinstance(e.get("source"), str) and isinstance(e.get("id"), str)}


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_no_server_error(case, seeded):
    response = case.call_and_validate(base_url=seeded.api_url, timeout=15)
    if case.method == "POST" and case.path == "/api/v1/events" and case.body is not NOT_SET:
        try:
            keys = _event_keys(case.body if not isinstance(case.body, bytes) else orjson.loads(case.body))
        except orjson.JSONDecodeError:
            keys = set()
        ANSWERED["accepted" if response.status_code == 204 else "refused"].update(keys)


def test_nothing_of_a_refused_ingest_request_was_stored(stack):
    assert ANSWERED["accepted"] or ANSWERED["refused"], "run with the schemathesis test above (same module)"
    with EngineClient(stack.api_url) as client:
        client.ingest(event("marker-last", "marker", "s"))
        client.wait_stored("marker-last", 1)        # JetStream order: everything accepted before is stored
    with psycopg.connect(stack.database_url) as conn:
        stored = set(conn.execute("SELECT source, id FROM events").fetchall())
    refused_only = ANSWERED["refused"] - ANSWERED["accepted"]
    assert not (refused_only & stored), sorted(refused_only & stored)[:10]
    assert ANSWERED["accepted"] <= stored, sorted(ANSWERED["accepted"] - stored)[:10]
