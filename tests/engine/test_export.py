"""`bp-openmeter export` from one engine into another, both real stacks on the shared servers.

The source holds the fingate fixture events plus generated ones (extension attributes,
numbers past 64 bits, events no meter counts). After an export the target must hold the
same events (ids, sources, times, data and attributes as stored) and answer every meter's
query per subject, group and minute exactly as the source does, however the export went:
in one run, killed with SIGKILL midway and resumed, through a target answering 503 for a
while, or stopped by a target that refuses an event.
"""

from __future__ import annotations

import json
import signal
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import psycopg.rows
import pytest

from bp_openmeter.meters_lock import backfill_key
from testkit.client import OpenMeterClient
from testkit.stack.local import EngineProcess, LocalStack
from testkit.timeouts import TIMEOUTS
from testkit.usage.compare import compare, render_diff, rows_from_json
from testkit.usage.events import chunks, load_events, load_meters
from testkit.wait import poll, wait_until
from tests.engine.fault_proxy import FaultProxy

pytestmark = pytest.mark.servers

UTC = timezone.utc
METERS = load_meters()
BATCH = 100  # events per export request: the exports below take many requests
EXPORT_TIMEOUT = 180.0  # one export run, start to exit, on a busy machine


def generated_events(count: int, label: str) -> list[dict[str, Any]]:
    """Events beside the fixture's: every 40th with extension attributes (one a number past
    64 bits), every 25th of a type no meter counts, data with long exact numbers."""
    start = datetime(2025, 3, 29, 18, 0, tzinfo=UTC)
    events = []
    for i in range(count):
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"{label}-{i}",
            "source": f"//export/{label}",
            "type": "export.unmetered" if i % 25 == 0 else "fingate.api.call",
            "subject": f"tpp-{label}-{i % 7}",
            "time": (start + timedelta(seconds=41 * i, microseconds=i)).isoformat(),
            "data": {
                "method": ("GET", "POST")[i % 2],
                "endpoint": f"/aisp/e{i % 3}",
                "status_class": "2xx",
                "latency_ms": orjson.Fragment(f"{i % 250}.{i:022d}".encode()),
                "psu_id": f"psu-{i % 41}",
                "ref": orjson.Fragment(b"123456789012345678901234567890"),
            },
        }
        if i % 40 == 0:
            event.update(traceparent=f"00-{i:032x}-{i:016x}-01", tenantid=orjson.Fragment(b"98765432109876543210"))
            event["datacontenttype"] = "application/json"
        events.append(event)
    return events


def fixture_events() -> list[dict[str, Any]]:
    return [{"specversion": "1.0", **event} for event in load_events()]


def stored(stack: LocalStack) -> list[tuple]:
    """Every stored event of the stack's namespace as the export must carry it."""
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute(
            "SELECT source, id, type, subject, time, data::text, attributes::text FROM events "
            'WHERE namespace = %s ORDER BY source COLLATE "C", id COLLATE "C"',
            (stack.namespace,),
        ).fetchall()


def stored_count(stack: LocalStack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE namespace = %s", (stack.namespace,)).fetchone()[0]


def checkpoint(stack: LocalStack, name: str) -> dict | None:
    with psycopg.connect(stack.database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM export_checkpoints WHERE name = %s", (name,)).fetchone()


def ingest_and_wait(stack: LocalStack, events: list[dict]) -> None:
    before = stored_count(stack)
    with OpenMeterClient(stack.api_url) as client:
        for part in chunks(events, 500):
            client.ingest(list(part))
    distinct = len({(e["source"], e["id"]) for e in events})
    wait_until(
        lambda: stored_count(stack) == before + distinct, TIMEOUTS.usage_convergence, "the source stores its events"
    )


def start_export(source: LocalStack, target_url: str, *args: str, env: dict | None = None) -> EngineProcess:
    return source.command(
        "export",
        "--target",
        target_url,
        "--batch-size",
        str(BATCH),
        "--progress-every",
        "1s",
        *args,
        log_name=f"export-{uuid.uuid4().hex[:8]}",
        extra_env=env,
    )


def log_lines(proc: EngineProcess) -> list[dict]:
    return [json.loads(line) for line in proc.log_path.read_text().splitlines() if line.startswith("{")]


def export(source: LocalStack, target_url: str, *args: str, env: dict | None = None) -> tuple[int, list[dict]]:
    proc = start_export(source, target_url, *args, env=env)
    code = proc.wait(timeout=EXPORT_TIMEOUT)
    return code, log_lines(proc)


def last(lines: list[dict], message: str) -> dict:
    found = [line for line in lines if line.get("msg") == message]
    assert found, f"no {message!r} line in the export's log: {lines[-5:]}"
    return found[-1]


def usage(stack: LocalStack, token: str | None = None) -> dict[str, Any]:
    """Every meter's answer per subject, group values and minute, as tables."""
    tables = {}
    with OpenMeterClient(stack.api_url, token=token) as client:
        for meter in METERS:
            group_by = ["subject", *sorted(meter.get("groupBy") or {})]
            body = client.query(meter["slug"], windowSize="MINUTE", groupBy=group_by)
            tables[meter["slug"]] = rows_from_json(body, windowed=True)
    return tables


def assert_same_history(source: LocalStack, target: LocalStack, token: str | None = None) -> None:
    """The target holds the source's events, once each, and agrees on every meter."""
    expected = stored(source)
    wait_until(
        lambda: stored_count(target) >= len(expected), TIMEOUTS.usage_convergence, "the target stores the export"
    )
    assert stored(target) == expected
    source_usage, target_usage = usage(source), usage(target, token)
    for slug, table in source_usage.items():
        assert table, f"{slug}: the source answers no rows; the comparison would prove nothing"
        diff = compare(table, target_usage[slug], rel_tol=0, abs_tol=0)
        assert not diff, f"{slug}: {diff.summary()}\n{render_diff(diff)}"


@pytest.fixture(scope="module")
def source(stack_factory) -> LocalStack:
    stack = stack_factory(METERS)
    ingest_and_wait(stack, fixture_events() + generated_events(1500, "gen"))
    return stack


def test_an_export_carries_every_event_as_stored_and_the_meters_agree(source, stack_factory):
    target = stack_factory(METERS)
    code, lines = export(source, target.api_url)
    assert code == 0, lines[-3:]
    summary = last(lines, "export finished")
    assert summary["exported"] == stored_count(source) and summary["retries"] == 0
    assert any(line.get("msg") == "export progress" for line in lines) or summary["seconds"] < 1
    assert_same_history(source, target)
    row = checkpoint(source, "default")
    assert row["events_sent"] == stored_count(source) and row["finished_at"] is not None

    # The same export again: nothing new was stored, nothing is sent.
    code, lines = export(source, target.api_url)
    assert code == 0 and last(lines, "export finished")["exported"] == 0

    # --verify compares the meters of both sides: they agree.
    code, lines = export(source, target.api_url, "--verify")
    assert code == 0, [line for line in lines if line.get("level") == "error"]
    assert last(lines, "verify finished")["differing"] == 0


def test_verify_finds_a_target_that_lacks_history(source, stack_factory):
    target = stack_factory(METERS)
    code, lines = export(source, target.api_url, "--verify", "--window", "HOUR", "--from", "2025-03-29T00:00:00Z")
    assert code == 1
    finished = last(lines, "verify finished")
    assert finished["differing"] == len(METERS) and finished["time_from"] == "2025-03-29T00:00:00Z"
    differs = last(lines, "meter differs")
    assert "target None" in differs["first"][0], differs


def test_verify_reports_a_meter_still_being_built_at_the_source(source, stack_factory):
    """A meter whose backfill is running (interrupted, as if the api had stopped mid-way, and
    held by another backfiller here) counts part of its events at the source: verify must
    not find it in agreement with an empty target, whose answer is empty too."""
    slug = METERS[0]["slug"]
    target = stack_factory(METERS)
    with psycopg.connect(source.database_url, autocommit=True) as conn:
        (pk,) = conn.execute(
            "SELECT pk FROM meters WHERE namespace = %s AND slug = %s AND deleted_at IS NULL", (source.namespace, slug)
        ).fetchone()
        conn.execute("SELECT pg_advisory_lock(%s, %s)", backfill_key(pk))
        try:
            with conn.transaction():
                for table in ("rollup_minute", "rollup_hour", "rollup_hour_total"):
                    conn.execute(f"DELETE FROM {table} WHERE meter_pk = %s", (pk,))
                conn.execute(
                    "UPDATE meters SET backfilled_through = 0, backfill_target = "
                    "(SELECT last_value FROM events_seq_seq) WHERE pk = %s",
                    (pk,),
                )
            code, lines = export(source, target.api_url, "--verify", "--window", "HOUR")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", backfill_key(pk))
    assert code == 1
    reports = {line["meter"]: line for line in lines if line.get("msg") in ("meter agrees", "meter differs")}
    assert reports[slug]["msg"] == "meter differs", reports[slug]
    assert "still being built" in reports[slug]["first"][0], reports[slug]
    # The source's sink finishes the backfill: the meter answers again, exactly (later tests read it).
    with OpenMeterClient(source.api_url) as client:
        done = poll(
            lambda: client.http.get(f"/api/v1/meters/{slug}/query"),
            lambda r: r.status_code == 200,
            TIMEOUTS.usage_convergence,
        ).last
    assert done.status_code == 200, done.text


def test_a_killed_export_resumes_with_nothing_missing_and_nothing_doubled(source, stack_factory):
    """SIGKILL while the target has accepted a request whose answer the exporter never
    got: the checkpoint stops before that request, the resumed run sends it again (once),
    and the target, which deduplicates, counts every event once."""
    target = stack_factory(METERS)
    total = stored_count(source)
    with FaultProxy(target.api_url, hold_after=5) as proxy:
        proc = start_export(source, proxy.url, "--name", "killed")
        wait_until(proxy.held.is_set, EXPORT_TIMEOUT, "the export's 5th request reaches the target")
        proc.signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUTS.server_stop)
        at_kill = checkpoint(source, "killed")
        assert at_kill["events_sent"] == 4 * BATCH and at_kill["finished_at"] is None
        proxy.release.set()

        code, lines = export(source, proxy.url, "--name", "killed")
        assert code == 0, lines[-3:]
        resumed = last(lines, "export finished")
        assert resumed["resumed_from_seq"] == at_kill["exported_through"]
        assert resumed["exported"] == total - 4 * BATCH
        # The request in flight at the kill went twice, nothing else did.
        assert proxy.accepted_events == total + BATCH
    assert checkpoint(source, "killed")["events_sent"] == total
    assert_same_history(source, target)


def test_a_target_unavailable_for_a_while_is_waited_out(source, stack_factory):
    target = stack_factory(METERS)
    with FaultProxy(target.api_url, unavailable=3) as proxy:
        code, lines = export(source, proxy.url, "--name", "flaky", "--retry-for", "1m")
        assert code == 0, lines[-3:]
        assert proxy.refused == 3
    retries = [line for line in lines if line.get("msg") == "target unavailable, retrying"]
    assert [line["attempt"] for line in retries] == [1, 2, 3]
    assert all("HTTP 503" in line["answer"] for line in retries)
    assert last(lines, "export finished")["retries"] == 3
    assert_same_history(source, target)


def test_a_target_unavailable_past_retry_for_stops_the_export(source, stack_factory):
    target = stack_factory(METERS)
    with FaultProxy(target.api_url, unavailable=None) as proxy:
        code, lines = export(source, proxy.url, "--name", "down", "--retry-for", "2s")
    assert code == 1
    stopped = last(lines, "export stopped")
    assert "kept failing" in stopped["error"] and "HTTP 503" in stopped["error"], stopped
    assert checkpoint(source, "down")["exported_through"] == 0


def test_a_target_refusing_an_event_stops_the_export_naming_it(source, stack_factory):
    """A real refusal: the target accepts no event time before its api.eventTime.earliest."""
    earliest = datetime(2025, 3, 30, 0, 0, tzinfo=UTC)
    target = stack_factory(METERS, overrides={"api": {"eventTime": {"earliest": earliest.isoformat()}}})
    with psycopg.connect(source.database_url) as conn:
        first_refused = conn.execute(
            "SELECT seq, source, id FROM events WHERE namespace = %s AND time < %s ORDER BY seq LIMIT 1",
            (source.namespace, earliest),
        ).fetchone()
        accepted_before, last_accepted = conn.execute(
            "SELECT count(*), coalesce(max(seq), 0) FROM events WHERE namespace = %s AND seq < %s",
            (source.namespace, first_refused[0]),
        ).fetchone()
    code, lines = export(source, target.api_url, "--name", "refused")
    assert code == 1
    error = last(lines, "export stopped")["error"]
    seq, event_source, event_id = first_refused
    assert f"seq {seq} (source {event_source!r}, id {event_id!r})" in error, error
    assert "time:" in error and "is before" in error and "api.eventTime.earliest" in error, error
    # Every event before it is accepted, and the checkpoint stops right before it.
    row = checkpoint(source, "refused")
    assert (row["exported_through"], row["events_sent"]) == (last_accepted, accepted_before)


def test_a_target_that_wants_a_token_gets_the_one_in_the_environment(source, stack_factory):
    token = "export-" + uuid.uuid4().hex
    target = stack_factory(METERS, overrides={"api": {"auth": {"mode": "token"}}}, env={"BPOM_API_TOKENS": token})
    code, lines = export(source, target.api_url, "--name", "token")
    assert code == 1
    error = last(lines, "export stopped")["error"]
    assert "HTTP 401" in error and "BPOM_EXPORT_TOKEN" in error, error
    code, lines = export(source, target.api_url, "--name", "token", env={"BPOM_EXPORT_TOKEN": token})
    assert code == 0, lines[-3:]
    assert_same_history(source, target, token)
    assert all(token not in json.dumps(line) for line in lines)


def test_requests_and_answers_larger_than_the_target_takes_are_cut(source, stack_factory):
    """The target takes at most 30 events a request (api.maxBatchEvents): its 413s halve 100
    to 50 to 25. It answers at most 25 rows a query (api.maxQueryRows): --verify halves its
    slices of a week of hours until each fits."""
    target = stack_factory(METERS, overrides={"api": {"maxBatchEvents": 30, "maxQueryRows": 25}})
    code, lines = export(source, target.api_url, "--name", "halved")
    assert code == 0, lines[-3:]
    statuses = last(lines, "export finished")["statuses"]
    assert statuses.get("413", 0) > 0 and statuses.get("204", 0) > 0, statuses
    expected = stored(source)
    wait_until(lambda: stored_count(target) >= len(expected), TIMEOUTS.usage_convergence, "the target stores it")
    assert stored(target) == expected
    # The totals, compared through the target's query API (whose answers are too small to do it in one).
    code, lines = export(source, target.api_url, "--verify", "--window", "HOUR")
    assert code == 0, [line for line in lines if line.get("level") == "error"][:3]
    assert all(line["rows"] > 0 for line in lines if line.get("msg") == "meter agrees")


@pytest.mark.parametrize(
    "start, end, window, cuts",
    [
        ("2025-03-29T18:20:00Z", "2025-03-29T21:00:00Z", "HOUR", ["18:20", "19:00", "20:00", "21:00"]),
        (
            "2025-12-15T00:00:00Z",
            "2026-02-02T00:00:00Z",
            "MONTH",
            ["2025-12-15", "2026-01-01", "2026-02-01", "2026-02-02"],
        ),
    ],
)
def test_verify_cuts_the_range_at_window_boundaries(start, end, window, cuts):
    from bp_openmeter.export.verify import boundaries
    from bp_openmeter.timefmt import format_time, parse_time

    found = [format_time(t) for t in boundaries(parse_time(start), parse_time(end), window)]
    assert [f[11:16] if window == "HOUR" else f[:10] for f in found] == cuts


def test_a_named_export_resumes_only_as_the_same_export(source, stack_factory):
    """Another target or range under the same name can never resume: exit 2 (an argument
    error, not "run again"), the range spelt in RFC 3339."""
    since = ("--from", "2025-03-29T00:00:00Z")
    code, _lines = export(source, "http://127.0.0.1:9", "--name", "pinned", "--retry-for", "1s", *since)
    assert code == 1  # nothing listens there; the checkpoint row exists now
    code, lines = export(source, "http://127.0.0.1:10", "--name", "pinned", *since)
    assert code == 2
    error = last(lines, "export stopped")["error"]
    assert "was started with target 'http://127.0.0.1:9/api/v1/events'" in error and "--restart" in error, error
    code, lines = export(source, "http://127.0.0.1:9", "--name", "pinned", "--from", "2025-03-30T00:00:00+02:00")
    assert code == 2
    error = last(lines, "export stopped")["error"]
    assert "from 2025-03-29T00:00:00Z (now 2025-03-29T22:00:00Z)" in error, error


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "http://user:secret@example.test"], "BPOM_EXPORT_TOKEN"),
        (["--target", "ftp://example.test"], "http(s) URL"),
        (
            ["--target", "http://example.test", "--from", "2025-03-30T00:00:00Z", "--to", "2025-03-29T00:00:00Z"],
            "--from: must be before --to",
        ),
        (["--target", "http://example.test", "--batch-size", "0"], "--batch-size"),
        (["--target", "http://example.test", "--from", "yesterday"], "--from"),
    ],
)
def test_invalid_arguments_are_refused_with_the_flag_named(source, args, message):
    proc = source.command("export", *args, log_name=f"export-args-{uuid.uuid4().hex[:8]}")
    assert proc.wait(timeout=EXPORT_TIMEOUT) == 2
    output = proc.log_path.read_text()
    assert "invalid arguments" in output and message in output, output
    assert "secret" not in output


def test_the_switch_waits_for_the_sink_and_exports_what_it_stores_late(stack_factory):
    """--wait-drained: events the API accepted while the sink was down are in JetStream only;
    the export waits for the sink to store them and exports them too."""
    source = stack_factory(METERS)
    target = stack_factory(METERS)
    ingest_and_wait(source, fixture_events() + generated_events(300, "early"))
    source.sinks[0].stop()
    late = generated_events(200, "late")
    with OpenMeterClient(source.api_url) as client:
        client.ingest(late)
    proc = start_export(source, target.api_url, "--wait-drained", "2m", "--name", "switch")
    waiting = poll(
        lambda: [line for line in log_lines(proc) if line.get("msg", "").startswith("waiting for the sink")],
        bool,
        TIMEOUTS.usage_convergence,
    )
    assert waiting.done and waiting.last[0]["pending"] > 0, log_lines(proc)[-3:]
    assert proc.running
    source.start_sink(0)
    assert proc.wait(timeout=EXPORT_TIMEOUT) == 0, log_lines(proc)[-3:]
    assert last(log_lines(proc), "export finished")["exported"] == stored_count(source)
    assert_same_history(source, target)
