"""What the fault tests read from the running stack: stored rows, query answers,
readiness, metrics, log lines, the sink's open transaction and its consumer's backlog."""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import nats
import orjson
import psycopg
import yaml
from nats.js.errors import NotFoundError, ServiceUnavailableError

from bp_openmeter import config as engine_config
from bp_openmeter import messages
from testkit.stack.local import LocalStack
from testkit.wait import poll as poll_until
from tests.faults.traffic import EVENT_TYPE, Ledger

COUNT_METER = "fault_events"
SUM_METER = "fault_units"
METERS = [
    {"slug": COUNT_METER, "eventType": EVENT_TYPE, "aggregation": "COUNT"},
    {"slug": SUM_METER, "eventType": EVENT_TYPE, "aggregation": "SUM", "valueProperty": "$.units"},
]


@dataclass(frozen=True)
class Totals:
    """posted / acknowledged / stored / queried events (and units), plus what differs by id."""

    posted: int
    acknowledged: int
    stored: int
    queried: int
    acknowledged_units: int
    queried_units: int
    missing: int  # acknowledged, not stored
    unexpected: int  # stored, never posted
    dead_letters: int

    def line(self) -> str:
        return (
            f"posted={self.posted} acknowledged={self.acknowledged} stored={self.stored} "
            f"queried={self.queried} units acknowledged={self.acknowledged_units} "
            f"queried={self.queried_units} missing={self.missing} unexpected={self.unexpected} "
            f"dead_letters={self.dead_letters}"
        )

    @property
    def exact(self) -> bool:
        return (
            self.posted == self.acknowledged == self.stored == self.queried
            and self.acknowledged_units == self.queried_units
            and not self.missing
            and not self.unexpected
            and not self.dead_letters
        )

    def as_dict(self) -> dict:
        return asdict(self)


def poll(read: Callable[[], object], done: Callable[[object], bool], timeout: float, what: str, interval: float = 0.1):
    """Read until `done(answer)`; fails naming `what` and the last answer after `timeout` seconds."""
    polled = poll_until(read, done, timeout, interval=interval)
    if not polled.done:
        raise AssertionError(f"{what}: not reached within {timeout:.0f}s; last: {polled.last!r}"[:2000])
    return polled.last


def query_total(stack: LocalStack, slug: str, ok_only: bool = True) -> int | None:
    """The meter's total over all time; with ok_only=False, None when the api cannot answer it (503)."""
    response = httpx.get(f"{stack.api_url}/api/v1/meters/{slug}/query", timeout=10)
    if not ok_only and response.status_code != 200:
        return None
    response.raise_for_status()
    return int(sum(row["value"] for row in response.json()["data"]))


def stored_ids(stack: LocalStack) -> set[str]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT id FROM events WHERE namespace = %s AND type = %s", (stack.namespace, EVENT_TYPE)
        ).fetchall()
    return {row[0] for row in rows}


def dead_letter_count(stack: LocalStack) -> int:
    """Dead letters of the scenario's events, or of messages that could not be read at all."""
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM dead_letters WHERE type IS NULL OR type = %s", (EVENT_TYPE,)
        ).fetchone()[0]


def totals(stack: LocalStack, ledger: Ledger) -> Totals:
    stored = stored_ids(stack)
    with ledger.lock:
        posted = set(ledger.posted)
        acked = set(ledger.acknowledged)
    return Totals(
        posted=len(posted),
        acknowledged=len(acked),
        stored=len(stored),
        queried=query_total(stack, COUNT_METER),
        acknowledged_units=ledger.acked_units(),
        queried_units=query_total(stack, SUM_METER),
        missing=len(acked - stored),
        unexpected=len(stored - posted),
        dead_letters=dead_letter_count(stack),
    )


def _with_consumer(stack: LocalStack, read: Callable) -> Any:
    """Run `read(js, stream, durable)` on a fresh connection to the stack's JetStream."""
    # The engine's own reading of its config: names it derives from the instance included.
    names = engine_config.build_config(yaml.safe_load(stack.config_path.read_text())).nats

    async def run() -> Any:
        nc = await nats.connect(stack.servers.nats_url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return await read(nc.jetstream(), names.stream.name, names.consumer.durable)
        finally:
            await nc.close()

    return asyncio.run(run())


def consumer_backlog(stack: LocalStack) -> int:
    """Messages the sink has not acked yet (pending plus delivered-but-unacked)."""

    async def read(js, stream: str, durable: str) -> int:
        info = await js.consumer_info(stream, durable)
        return info.num_pending + info.num_ack_pending

    return _with_consumer(stack, read)


def unacked_events(stack: LocalStack) -> int:
    """Events in the messages after the consumer's ack floor: with the sink stopped, the
    acknowledged events that only JetStream holds (a message carries a request's events)."""

    async def read(js, stream: str, durable: str) -> int:
        floor = (await js.consumer_info(stream, durable)).ack_floor.stream_seq
        last = (await js.stream_info(stream)).state.last_seq
        held = [(await js.get_msg(stream, seq)).data for seq in range(floor + 1, last + 1)]
        return sum(len(messages.unpack(data)) for data in held)

    return _with_consumer(stack, read)


def settled_totals(stack: LocalStack, ledger: Ledger, timeout: float = 90.0) -> Totals:
    """Totals once the sink has acked every message and the numbers agree, or as they are at the timeout.

    Never raises on a difference: the caller reports the totals first, then asserts.
    """

    def read() -> tuple[bool, Totals]:
        try:
            drained = consumer_backlog(stack) == 0
        except (ServiceUnavailableError, NotFoundError):
            # A JetStream cluster answers so for a moment after regaining quorum (a newly elected
            # meta leader: "consumer not found" until it has applied its log); a consumer really
            # gone shows in the totals instead.
            drained = False
        return drained, totals(stack, ledger)

    return poll_until(read, lambda answer: answer[0] and answer[1].exact, timeout, interval=0.5).last[1]


def readiness(telemetry_url: str) -> tuple[int, str]:
    try:
        response = httpx.get(f"{telemetry_url}/healthz/ready", timeout=5)
    except httpx.HTTPError as exc:
        return 0, repr(exc)
    return response.status_code, response.text


def metric(telemetry_url: str, name: str) -> float | None:
    """A label-less sample of the Prometheus text exposition, or None if absent."""
    text = httpx.get(f"{telemetry_url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def log_records(stack: LocalStack, log_name: str) -> list[dict]:
    """The JSON log lines of one engine process (api, sink-0, ...)."""
    records = []
    for line in (stack.root / f"{log_name}.log").read_text(errors="replace").splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue  # a traceback line of a killed interpreter, say
    return records


def sink_in_transaction(stack: LocalStack, timeout: float) -> bool:
    """Wait until a sink session is inside an open transaction (storing a batch); False on timeout."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:

        def open_transactions() -> int:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'bp-openmeter-sink' AND xact_start IS NOT NULL "
                "AND state IN ('active', 'idle in transaction')"
            ).fetchone()[0]

        # Polled every 2 ms: a batch's transaction may last only a few milliseconds.
        return poll_until(open_transactions, bool, timeout, interval=0.002).done


def drained_totals(stack: LocalStack, ledger: Ledger, timeout: float = 90.0) -> Totals:
    """Totals once the sink has acked every message, whatever they say (a control run expects a difference)."""
    poll(lambda: consumer_backlog(stack), lambda backlog: backlog == 0, timeout, "the sink acked every message")
    return totals(stack, ledger)


def stored_count(database_url: str, stack: LocalStack) -> int:
    """The stack's events as one server sees them (a primary or a standby, by its own URL)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM events WHERE namespace = %s AND type = %s", (stack.namespace, EVENT_TYPE)
        ).fetchone()[0]


def sink_sessions_waiting_for_standby(server_url: str) -> list[int]:
    """Backend pids of sink sessions whose COMMIT waits for a synchronous standby."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'bp-openmeter-sink' AND wait_event = 'SyncRep'"
        ).fetchall()
    return [pid for (pid,) in rows]


def cancel_backends(server_url: str, pids: list[int]) -> int:
    """pg_cancel_backend each pid, as an administrator would; returns how many were signalled."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        return sum(bool(conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]) for pid in pids)


def query_status(stack: LocalStack) -> int:
    """The status of one usage query (200, or 503 when the api could not reach PostgreSQL)."""
    return httpx.get(f"{stack.api_url}/api/v1/meters/{COUNT_METER}/query", timeout=10).status_code


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets: its descriptors' socket inodes, found in /proc/net/tcp*."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def sink_process_in_transaction(stack: LocalStack, index: int, timeout: float) -> bool:
    """Wait until sink process `index` has a session inside an open transaction (storing a batch)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:

        def its_open_transactions() -> int:
            ports = local_ports(stack.sinks[index].proc.pid)
            rows = conn.execute(
                "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'bp-openmeter-sink' AND xact_start IS NOT NULL "
                "AND state IN ('active', 'idle in transaction')"
            ).fetchall()
            return sum(port in ports for (port,) in rows)

        return poll_until(its_open_transactions, bool, timeout, interval=0.002).done
