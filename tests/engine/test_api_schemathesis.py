"""schemathesis against the engine's own OpenAPI document (the package's openapi.yaml, which
the api serves at /api/v1/openapi.yaml: test_openapi_document checks they are the same).

Every operation gets schema-valid and schema-violating requests; every answer must
be a documented status with a documented body (problem+json for errors), never a
5xx, within the request timeout. Events of refused ingest requests must not be
stored: the last test sends ingest requests of both kinds to an engine of its own and
compares what was answered with what its database holds.
"""

from __future__ import annotations

import os
from importlib import resources

import orjson
import psycopg
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config._checks import NegativeDataRejectionConfig
from schemathesis.core import NOT_SET

from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

MAX_EXAMPLES = int(os.environ.get("BPOM_FUZZ_EXAMPLES", "60"))

schema = schemathesis.openapi.from_dict(yaml.safe_load((resources.files("bp_openmeter") / "openapi.yaml").read_text()))
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
# Rules between values (from before to, group keys the meter has, a valueProperty only
# for aggregations other than COUNT) are not in the schema: a schema-valid request may
# rightly get 400, so "positive data accepted" cannot hold.
schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])
# A schema-violating request must be refused with a client error: 413 for a batch over
# maxItems is one, 431 for parameters past the request head's limit another. A 5xx is
# not a refusal (the default list counts it as one).
schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
    expected_statuses=[400, 401, 403, 404, 405, 409, 413, 415, 431]
)


@pytest.fixture(scope="module")
def seeded(stack):
    """The document's example meter exists with an event, so the example phase reaches real queries."""
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(
            slug="tokens_total",
            eventType="prompt",
            aggregation="SUM",
            valueProperty="$.tokens",
            groupBy={"model": "$.model"},
        )
        client.ingest(event("seed-1", "prompt", "customer-1", data={"tokens": 3, "model": "m"}))
    return stack


def _event_keys(body) -> set[tuple[str, str]]:
    events = body if isinstance(body, list) else [body]
    return {
        (e["source"], e["id"])
        for e in events
        if isinstance(e, dict) and isinstance(e.get("source"), str) and isinstance(e.get("id"), str)
    }


def _sent_keys(case) -> set[tuple[str, str]]:
    if case.body is NOT_SET:
        return set()
    try:
        return _event_keys(case.body if not isinstance(case.body, bytes) else orjson.loads(case.body))
    except orjson.JSONDecodeError:
        return set()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_no_server_error(case, seeded):
    case.call_and_validate(base_url=seeded.api_url, timeout=15)


INGEST = schema["/api/v1/events"]["POST"]
INGEST_REQUESTS = st.one_of(
    INGEST.as_strategy(schemathesis.GenerationMode.POSITIVE), INGEST.as_strategy(schemathesis.GenerationMode.NEGATIVE)
)


def test_nothing_of_a_refused_ingest_request_was_stored(stack_factory):
    own = stack_factory()  # a database of its own: every stored row comes from the requests below
    answered: dict[str, set[tuple[str, str]]] = {"accepted": set(), "refused": set()}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(INGEST_REQUESTS)
    def send(case):
        response = case.call(base_url=own.api_url, timeout=15)
        answered["accepted" if response.status_code == 204 else "refused"].update(_sent_keys(case))

    send()
    assert answered["accepted"] or answered["refused"], "no ingest request carried an event with a source and an id"

    def stored_keys() -> set[tuple[str, str]]:
        with psycopg.connect(own.database_url) as conn:
            return set(conn.execute("SELECT source, id FROM events").fetchall())

    # The sink's workers commit batches in any order, so no one event marks "all before it
    # are stored": poll until every accepted event is.
    stored = poll(stored_keys, lambda keys: answered["accepted"] <= keys, TIMEOUTS.usage_convergence).last
    refused_only = answered["refused"] - answered["accepted"]
    assert not (refused_only & stored), sorted(refused_only & stored)[:10]
    assert answered["accepted"] <= stored, sorted(answered["accepted"] - stored)[:10]
