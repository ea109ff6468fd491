"""windowTimeZone takes IANA zone and link names only (zones.py); anything else is a 400
naming the parameter, in the query string and in a POST body alike."""

from __future__ import annotations

import pytest

from testkit.client import OpenMeterClient as OpenMeterClient
from testkit.client import event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers

ACCEPTED = [
    "UTC",
    "Etc/UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "America/Argentina/Buenos_Aires",
    "US/Pacific",
    "Asia/Calcutta",
    "GMT",
    "Etc/GMT+5",
    "EST5EDT",  # links and old-style zones of the database
]
REFUSED = [
    "right/UTC",  # a leap-second clock: a DAY would end at 23:59:33 UTC
    "right/Europe/Berlin",
    "posix/Europe/Berlin",  # a copy under the host's zoneinfo directory
    "posixrules",
    "localtime",  # files of that directory, not zones
    "Factory",  # in the database, but names no place
    "Local",  # Go's name for the host's zone
    "utc",
    "europe/berlin",  # names are case-sensitive
    "Europe/Berlin/",
    "/Europe/Berlin",
    "../zoneinfo/UTC",
    "Europe/../UTC",
    "Mars/Olympus_Mons",
    "+05:30",
    "UTC+1",
    "EST5",
    "x" * 200,
]


@pytest.fixture(scope="module")
def slug(stack):
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(slug="zone_names", eventType="zone.event", aggregation="COUNT")
        client.ingest(event("z-1", "zone.event", "s", time="2025-06-01T12:00:00Z"))
        client.query_until("zone_names", lambda a: bool(a["data"]) and a["data"][0]["value"] > 0)
    return "zone_names"


@pytest.mark.parametrize("name", ACCEPTED)
def test_iana_names_are_accepted(client, slug, name):
    rows = client.query(slug, windowSize="DAY", windowTimeZone=name)["data"]
    assert [r["value"] for r in rows] == [1]


@pytest.mark.parametrize("name", REFUSED)
def test_other_names_are_refused_naming_the_parameter(client, slug, name):
    for response in (
        client.http.get(f"/api/v1/meters/{slug}/query", params={"windowSize": "DAY", "windowTimeZone": name}),
        client.http.post(f"/api/v1/meters/{slug}/query", json={"windowSize": "DAY", "windowTimeZone": name}),
    ):
        body = problem(response, 400)
        assert body["field"] == "windowTimeZone"
        assert "time zone" in body["detail"]
