"""Where a sink batch spends PostgreSQL's time: EXPLAIN ANALYZE of the sink's statement.

The ingest benchmark shows PostgreSQL as the busiest process; this says which part
of the batch statement (the insert into `events`, its key index, the projection, the
rollup upserts) costs what. One batch of live events is staged on top of a history,
stored under EXPLAIN (ANALYZE, BUFFERS) and rolled back, a few times; the last run's
plan is reported by exclusive time per plan node.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from bp_openmeter import rollup_sql
from bp_openmeter.meters_lock import METERS_LOCK

from . import dataset

RUNS = 3


@dataclass(frozen=True)
class NodeTime:
    label: str
    exclusive_ms: float
    rows: int


@dataclass(frozen=True)
class BatchPlan:
    execution_ms: float
    planning_ms: float
    nodes: list[NodeTime]  # by exclusive time, largest first


def _label(node: dict) -> str:
    parts = [node["Node Type"]]
    for key in ("Relation Name", "CTE Name", "Index Name", "Subplan Name", "Function Name"):
        if node.get(key):
            parts.append(str(node[key]))
    return " ".join(parts)


def _total_ms(node: dict) -> float:
    return node.get("Actual Total Time", 0.0) * node.get("Actual Loops", 1)


def flatten(node: dict) -> list[NodeTime]:
    """Every node with its own time: its total less its children's.

    A CTE is computed lazily, inside the time of whichever CTE Scan first pulls its
    rows, and its own nodes are listed under the CTE's subplan as well; so a CTE
    Scan's time is left out (it would count the CTE twice) and the CTE's nodes carry
    its work."""
    children = node.get("Plans", [])
    own = _total_ms(node) - sum(_total_ms(child) for child in children)
    rows = int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1))
    out = [] if node["Node Type"] == "CTE Scan" else [NodeTime(_label(node), max(0.0, own), rows)]
    for child in children:
        out.extend(flatten(child))
    return out


def explain_batch(database_url: str, history: dataset.Dataset, batch: int) -> BatchPlan:
    with psycopg.connect(database_url) as conn:
        dataset.prepare_session(conn, rollup_sql.FOLD_WORK_MEM)  # as a sink session
        recent = dataset.live(history, batch)
        dataset.create_partitions(conn, recent)
        plan = None
        for _ in range(RUNS):
            dataset.stage(conn, recent, 0, batch)
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + rollup_sql.STORE_BATCH,
                {"meter_pk": None, "namespace": history.namespace},
            ).fetchone()[0][0]
            conn.rollback()  # the same batch again next run: every run inserts it all
    nodes = sorted(flatten(plan["Plan"]), key=lambda n: -n.exclusive_ms)
    return BatchPlan(plan["Execution Time"], plan["Planning Time"], nodes)
