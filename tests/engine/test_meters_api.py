"""Meters: CRUD as upstream's code behaves, retroactive backfill, rebuild on change."""

from __future__ import annotations

import pytest

from testkit.client import event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers


def test_create_get_list_delete(client, uid):
    slug = f"m_{uid}"
    created = client.create_meter(
        slug=slug,
        eventType=f"t_{uid}",
        aggregation="SUM",
        valueProperty="$.tokens",
        groupBy={"model": "$.model"},
        description="tokens",
        metadata={"team": "ai"},
        windowSize="HOUR",
    )  # a legacy member, ignored as upstream does
    assert created["slug"] == slug and created["name"] == slug and created["groupBy"] == {"model": "$.model"}
    assert created["metadata"] == {"team": "ai"} and "deletedAt" not in created and "windowSize" not in created
    assert client.http.get(f"/api/v1/meters/{slug}").json() == created
    assert client.http.get(f"/api/v1/meters/{created['id']}").json() == created
    assert slug in [m["slug"] for m in client.http.get("/api/v1/meters").json()]

    assert client.http.delete(f"/api/v1/meters/{slug}").status_code == 204
    problem(client.http.get(f"/api/v1/meters/{slug}"), 404)
    by_id = client.http.get(f"/api/v1/meters/{created['id']}").json()
    assert by_id["deletedAt"]  # still readable by id, as upstream
    assert slug not in [m["slug"] for m in client.http.get("/api/v1/meters").json()]
    assert client.http.delete(f"/api/v1/meters/{created['id']}").status_code == 204  # idempotent by id
    problem(client.http.delete(f"/api/v1/meters/{slug}"), 404)
    # The slug is free again.
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT")


def test_duplicate_slug_is_409(client, uid):
    client.create_meter(slug=f"d_{uid}", eventType="t", aggregation="COUNT")
    body = problem(
        client.http.post("/api/v1/meters", json={"slug": f"d_{uid}", "eventType": "t", "aggregation": "COUNT"}), 409
    )
    assert body["detail"] == "conflict error: meter with the same slug already exists"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"slug": "Bad-Slug", "eventType": "t", "aggregation": "COUNT"}, "slug"),
        ({"slug": "a__b", "eventType": "t", "aggregation": "COUNT"}, "slug"),
        ({"slug": "x" * 65, "eventType": "t", "aggregation": "COUNT"}, "slug"),
        ({"slug": "ok", "aggregation": "COUNT"}, "eventType"),
        ({"slug": "ok", "eventType": "t", "aggregation": "MEDIAN"}, "aggregation"),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "valueProperty": "$.x"}, "valueProperty"),
        ({"slug": "ok", "eventType": "t", "aggregation": "SUM"}, "valueProperty"),
        ({"slug": "ok", "eventType": "t", "aggregation": "SUM", "valueProperty": "tokens"}, "valueProperty"),
        ({"slug": "ok", "eventType": "t", "aggregation": "SUM", "valueProperty": "$..x"}, "valueProperty"),
        ({"slug": "ok", "eventType": "t", "aggregation": "SUM", "valueProperty": "$[?(@.a)]"}, "valueProperty"),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "groupBy": {"bad-key": "$.a"}}, "groupBy.bad-key"),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "groupBy": {"subject": "$.a"}}, "groupBy.subject"),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "groupBy": {"k": "a"}}, "groupBy.k"),
        (
            {"slug": "ok", "eventType": "t", "aggregation": "SUM", "valueProperty": "$.a", "groupBy": {"k": "$.a"}},
            "groupBy.k",
        ),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "description": ""}, "description"),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "eventFrom": "last week"}, "eventFrom"),
        ({"slug": "ok", "eventType": "t", "aggregation": "COUNT", "metadata": {"a": 1}}, "metadata"),
    ],
)
def test_invalid_meter_definitions_name_the_field(client, body, field):
    answer = problem(client.http.post("/api/v1/meters", json=body), 400)
    assert answer["field"] == field and field in answer["detail"]


@pytest.mark.parametrize(
    "path", ["/api/v1/meters/Robert'); DROP TABLE meters;--", "/api/v1/meters/a-b", "/api/v1/meters/" + "a" * 65]
)
def test_sql_looking_or_malformed_meter_references_are_400(client, path):
    problem(client.http.get(path), 400)


def test_unknown_meter_is_404(client):
    body = problem(client.http.get("/api/v1/meters/no_such_meter/query"), 404)
    assert body["detail"] == "not found error: meter not found: no_such_meter"


def test_a_new_meter_counts_events_that_arrived_before_it(client, uid):
    event_type = f"t_{uid}"
    client.create_meter(slug=f"probe_{uid}", eventType=event_type, aggregation="COUNT")
    client.ingest(
        [event(f"{uid}-{i}", event_type, "s", data={"tokens": i, "model": "m" + str(i % 2)}) for i in range(1, 11)]
    )
    client.query_until(f"probe_{uid}", lambda a: a["data"] and a["data"][0]["value"] == 10)

    slug = f"late_{uid}"
    client.create_meter(
        slug=slug, eventType=event_type, aggregation="SUM", valueProperty="$.tokens", groupBy={"model": "$.model"}
    )
    rows = client.query(slug, groupBy="model")["data"]
    assert {r["groupBy"]["model"]: r["value"] for r in rows} == {"m0": 30, "m1": 25}
    # And it keeps counting what arrives afterwards, exactly once.
    client.ingest(event(f"{uid}-11", event_type, "s", data={"tokens": 100, "model": "m1"}))
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 155)
    assert answer["data"][0]["value"] == 155


def test_update_changes_group_by_and_rebuilds(client, uid):
    event_type = f"t_{uid}"
    slug = f"u_{uid}"
    client.create_meter(
        slug=slug, eventType=event_type, aggregation="SUM", valueProperty="$.v", description="keep me", name="Before"
    )
    client.ingest(
        [event(f"{uid}-{i}", event_type, "s", data={"v": 1, "region": "eu" if i < 3 else "us"}) for i in range(5)]
    )
    client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 5)

    response = client.http.put(f"/api/v1/meters/{slug}", json={"groupBy": {"region": "$.region"}})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == slug  # absent name falls back to the slug (upstream)
    assert updated["description"] == "keep me"  # absent description stays
    assert updated["groupBy"] == {"region": "$.region"}
    rows = client.query(slug, groupBy="region")["data"]
    assert {r["groupBy"]["region"]: r["value"] for r in rows} == {"eu": 3, "us": 2}
    problem(client.http.put(f"/api/v1/meters/{slug}", json={"groupBy": {"region": "region"}}), 400)


def test_event_from_limits_what_counts(client, uid):
    event_type = f"t_{uid}"
    slug = f"ef_{uid}"
    client.create_meter(slug=slug, eventType=event_type, aggregation="COUNT", eventFrom="2024-06-01T00:00:00Z")
    client.ingest(
        [
            event(f"{uid}-old", event_type, "s", time="2024-05-31T23:59:59Z"),
            event(f"{uid}-new", event_type, "s", time="2024-06-01T00:00:00Z"),
        ]
    )
    answer = client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] > 0)
    assert answer["data"][0]["value"] == 1
    assert client.query(slug, from_="2024-05-31T00:00:00Z", to="2024-06-02T00:00:00Z")["data"][0]["value"] == 1


def test_meters_from_the_config_file(stack_factory):
    from testkit.client import OpenMeterClient

    meters = [{"slug": "cfg_calls", "eventType": "api.call", "aggregation": "COUNT", "groupBy": {"tpp": "$.tpp"}}]
    stack = stack_factory(meters)
    with OpenMeterClient(stack.api_url) as client:
        listed = client.http.get("/api/v1/meters").json()
        assert [m["slug"] for m in listed] == ["cfg_calls"]
        client.ingest(event("c1", "api.call", "bank-a", data={"tpp": "fintech-1"}))
        answer = client.query_until("cfg_calls", lambda a: bool(a["data"]), groupBy="tpp")
        assert answer["data"][0]["groupBy"] == {"tpp": "fintech-1"}


def test_create_answers_201_as_the_spec_and_the_sdks(client, uid):
    response = client.http.post(
        "/api/v1/meters", json={"slug": f"c201_{uid}", "eventType": "t", "aggregation": "COUNT"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["slug"] == f"c201_{uid}"


def test_list_honours_include_deleted_order_order_by_and_pages(stack_factory):
    from testkit.client import OpenMeterClient

    with OpenMeterClient(stack_factory().api_url) as client:
        # created in this order; names sort otherwise than slugs; one deleted, one updated last
        for slug, name, aggregation in [
            ("m_b", "Zeta", "SUM"),
            ("m_d", None, "COUNT"),
            ("m_a", "Alpha", "MAX"),
            ("m_c", "Beta", "AVG"),
        ]:
            body = {"slug": slug, "eventType": "t", "aggregation": aggregation, "name": name}
            if aggregation != "COUNT":
                body["valueProperty"] = "$.v"
            client.create_meter(body)
        assert client.http.delete("/api/v1/meters/m_d").status_code == 204
        assert client.http.put("/api/v1/meters/m_b", json={"name": "Zeta"}).status_code == 200

        def slugs(**params) -> list[str]:
            response = client.http.get("/api/v1/meters", params=params)
            assert response.status_code == 200, response.text
            return [m["slug"] for m in response.json()]

        assert slugs() == ["m_a", "m_b", "m_c"]  # live ones, by key ascending
        assert slugs(includeDeleted="false") == ["m_a", "m_b", "m_c"]
        assert slugs(includeDeleted="true") == ["m_a", "m_b", "m_c", "m_d"]
        assert slugs(order="DESC") == ["m_c", "m_b", "m_a"]
        assert slugs(orderBy="name", includeDeleted="true") == ["m_a", "m_c", "m_b", "m_d"]  # Alpha Beta Zeta m_d
        assert slugs(orderBy="aggregation") == ["m_c", "m_a", "m_b"]  # AVG MAX SUM
        assert slugs(orderBy="createdAt", includeDeleted="true") == ["m_b", "m_d", "m_a", "m_c"]
        assert slugs(orderBy="updatedAt", order="DESC") == ["m_b", "m_c", "m_a"]
        assert slugs(pageSize="2") == ["m_a", "m_b"]
        assert slugs(page="2", pageSize="2") == ["m_c"]
        assert slugs(page="3", pageSize="2") == []
        deleted = [
            m for m in client.http.get("/api/v1/meters", params={"includeDeleted": "true"}).json() if m["slug"] == "m_d"
        ]
        assert deleted[0]["deletedAt"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"includeDeleted": "yes"}, "includeDeleted"),
        ({"order": "asc"}, "order"),
        ({"orderBy": "slug"}, "orderBy"),
        ({"page": "0"}, "page"),
        ({"page": "²"}, "page"),
        ({"pageSize": "1001"}, "pageSize"),
        ({"limit": "5"}, "limit"),
        ({"includeDeleted": ["true", "false"]}, "includeDeleted"),  # given twice: never the last one silently
        ({"pageSize": ["5", "5"]}, "pageSize"),
    ],
)
def test_list_parameter_errors_name_the_parameter(client, params, field):
    body = problem(client.http.get("/api/v1/meters", params=params), 400)
    assert body["field"] == field and field in body["detail"]
