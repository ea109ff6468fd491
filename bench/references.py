"""The references of benchmark 1, measured in the same run on the same servers.

- JetStream: the same event payloads published one message per event, each with
  its Nats-Msg-Id (as a dedupe key would be), `publish_async` with up to 20,000
  acks pending, clock stopped when every PubAck has arrived. File storage, as the
  engine's stream.
- PostgreSQL: the same rows COPYed (text format, pre-formatted before the clock
  starts) into a table shaped like `events` with its primary key, 10,000 rows per
  committed transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
import orjson
import psycopg
from nats.js.api import StorageType, StreamConfig

from .workload import Workload

COPY_CHUNK = 10_000


async def jetstream_publish(nats_url: str, workload: Workload) -> float:
    """Events/s of raw publish-with-ack of the workload's payloads."""
    payloads = [orjson.dumps(e) for e in workload.events()]
    keys = [f"bench-{e_id}" for e_id in range(workload.count)]
    tag = uuid.uuid4().hex[:8]
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=30, publish_async_max_pending=20_000)
    stream = f"BENCH_RAW_{tag}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"benchraw.{tag}"], storage=StorageType.FILE))
    try:
        started = time.perf_counter()
        futures = []
        for payload, key in zip(payloads, keys):
            futures.append(await js.publish_async(f"benchraw.{tag}", payload, headers={"Nats-Msg-Id": key}))
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return workload.count / seconds


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def postgres_copy(database_url: str, workload: Workload) -> float:
    """Rows/s of raw COPY of the workload's rows into an events-shaped table with its key."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = []
    for e in workload.events():
        fields = [
            "default",
            e["source"],
            e["id"],
            e["type"],
            e["subject"],
            e["time"],
            orjson.dumps(e["data"]).decode(),
            now,
        ]
        lines.append("\t".join(_copy_text(f) for f in fields) + "\n")
    chunks = ["".join(lines[lo : lo + COPY_CHUNK]).encode() for lo in range(0, len(lines), COPY_CHUNK)]
    table = f"bench_raw_copy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {table} (namespace text NOT NULL, source text NOT NULL, id text NOT NULL,
                         type text NOT NULL, subject text NOT NULL, time timestamptz NOT NULL, data jsonb,
                         ingested_at timestamptz NOT NULL, PRIMARY KEY (namespace, source, id))""")
        try:
            started = time.perf_counter()
            for chunk in chunks:
                with conn.transaction():
                    with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                        copy.write(chunk)
            seconds = time.perf_counter() - started
        finally:
            conn.execute(f"DROP TABLE {table}")
    return workload.count / seconds
