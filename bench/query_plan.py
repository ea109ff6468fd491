"""The plan PostgreSQL runs for a query shape: the engine's own statements under auto_explain.

The query is answered by the engine's query code in this process (the same functions
the API calls), on a session that loaded PostgreSQL's auto_explain module (LOAD needs the
server's superuser: the local stack's) with every statement's plan, ANALYZE and BUFFERS
sent to the client as a notice. So the plan shown is the plan of the engine's statement
with its real parameters, whatever the engine's query code builds.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg

from bp_openmeter import meter_store, query_params, query_run
from testkit.stack.servers import admin_url_for

from .dataset import Dataset
from .queries import QueryCase, _range, _subject

_AUTO_EXPLAIN = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_buffers = on",
    "SET auto_explain.log_timing = on",
    "SET auto_explain.log_level = notice",
    "SET auto_explain.log_format = json",
    "SET TIME ZONE 'UTC'",  # as the engine's pool sessions (db.py)
    "SET jit = off",
)


def _superuser_url(database_url: str) -> str:
    admin = admin_url_for(database_url)
    if admin is None:
        raise RuntimeError("auto_explain needs the server's superuser; no admin URL is known for this server")
    return urlunsplit(urlsplit(admin)._replace(path=urlsplit(database_url).path))


async def explain(database_url: str, ds: Dataset, case: QueryCase, tz: str) -> list[str]:
    """The plan lines of every statement the engine runs for the case's first request."""
    plans: list[str] = []
    async with await psycopg.AsyncConnection.connect(_superuser_url(database_url)) as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        for statement in _AUTO_EXPLAIN:
            await conn.execute(statement)
        meter = await meter_store.get_meter(conn, ds.namespace, case.slug)
        if meter is None:
            raise RuntimeError(f"no meter {case.slug} in namespace {ds.namespace}")
        start, end = _range(ds, case, 0)
        params = query_params.QueryParams(
            start=start,
            end=end,
            window_size=case.window,
            time_zone=tz,
            subjects=(_subject(ds, 0),) if case.per_subject else (),
            group_by=case.group_by,
        )
        plans.clear()  # the meter's lookup is not the query
        result = await query_run.run(conn, meter, params, 1_000_000, json_rows=True)  # as the API asks it
    answered = len(orjson.loads(result.data_json)) if result.data_json is not None else len(result.rows)
    lines = [f"{answered:,} rows answered; {len(plans)} statement(s):"]
    for notice in plans:
        duration, _, body = notice.partition("plan:")
        plan = json.loads(body)
        lines.append(f"{duration.strip()}, planning {plan.get('Planning Time', 0):.1f} ms")
        lines += _tree(plan["Plan"], 1)
    return lines


_LABELS = ("Relation Name", "Index Name", "CTE Name", "Subplan Name", "Function Name")


def _tree(node: dict, depth: int) -> list[str]:
    """One line per plan node: what it reads, rows, loops, inclusive time, buffers."""
    what = " ".join([node["Node Type"], *(str(node[k]) for k in _LABELS if node.get(k))])
    loops = node.get("Actual Loops", 1)
    figures = [
        f"rows {node.get('Actual Rows', 0) * loops:,.0f}",
        *([f"loops {loops:,}"] if loops > 1 else []),
        f"{node.get('Actual Total Time', 0) * loops:.2f} ms",
    ]
    buffers = [f"{k.split()[1]} {node[k]:,}" for k in ("Shared Hit Blocks", "Shared Read Blocks") if node.get(k)]
    if buffers:
        figures.append("buffers " + ", ".join(buffers))
    out = [f"{'  ' * depth}-> {what} ({'; '.join(figures)})"]
    for child in node.get("Plans", []):
        out += _tree(child, depth + 1)
    return out
