"""The client that keeps posting while the kind tier upgrades a release (e2e/test_upgrade.py).

It runs inside the cluster (a Job: the ConfigMap at /client/ingest_client.py, run by
the engine image's python), where a `helm upgrade` that replaces the api pods does
not cut it off, as a port-forward to one pod would be. The suite runs the very same
file on this machine against a local stack (tests/e2e/test_ingest_client.py).
Standard library only.

    ingest_client.py URL --prefix P --type T [--seconds S] [--rate N] [--batch B] [--retry-for S]

It posts batches of new events (ids `<prefix>-<n>`, `data.units` = 1) at about N
events per second for S seconds, then stops making new ones. A batch that does not
get 204 (an error status, a connection that failed) is sent again with the same
ids until it does, for at most --retry-for seconds after the end: as a careful
producer does. Every --progress seconds it prints `progress second=S acknowledged=N`
(a test waits on these); its last line is one JSON summary:

    {"posted": n, "acknowledged": n, "answers": {"204": n, "503": n, "no answer": n, ...},
     "answers_by_second": [[second since start, answer], ...], "unacknowledged": [ids...]}

Exit code 0 when every posted event was acknowledged, 1 otherwise.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

CONTENT_TYPE = "application/cloudevents-batch+json"


def post(url, body, timeout):
    """The HTTP status, or 'no answer' when the request failed without one."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (urllib.error.URLError, OSError):
        return "no answer"


def batch(prefix, event_type, first, size):
    ids = [f"{prefix}-{n}" for n in range(first, first + size)]
    events = [
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "upgrade-client",
            "type": event_type,
            "subject": f"customer-{n % 5}",
            "data": {"units": 1},
        }
        for n, event_id in zip(range(first, first + size), ids)
    ]
    return ids, json.dumps(events).encode()


def run(args):
    url = args.url.rstrip("/") + "/api/v1/events"
    started = time.monotonic()
    stop_new_at = started + args.seconds
    give_up_at = stop_new_at + args.retry_for
    posted, acknowledged, answers, timeline = [], set(), Counter(), []
    pending = []  # (ids, body) not yet acknowledged
    next_index = 0
    next_progress = started
    while True:
        now = time.monotonic()
        if now >= next_progress:
            print(f"progress second={now - started:.1f} acknowledged={len(acknowledged)}", flush=True)
            next_progress = now + args.progress
        if not pending:
            if now >= stop_new_at:
                break
            due = started + next_index / args.rate
            if due > now:
                time.sleep(min(due - now, 0.2))
                continue
            ids, body = batch(args.prefix, args.type, next_index, args.batch)
            next_index += args.batch
            posted.extend(ids)
            pending.append((ids, body))
        ids, body = pending[0]
        answer = post(url, body, timeout=30)
        answers[answer] += 1
        timeline.append([round(time.monotonic() - started, 1), answer])
        if answer == "204":
            acknowledged.update(ids)
            pending.pop(0)
        elif time.monotonic() > give_up_at:
            break
        else:
            time.sleep(0.2)
    summary = {
        "posted": len(posted),
        "acknowledged": len(acknowledged),
        "answers": dict(answers),
        "answers_by_second": timeline,
        "unacknowledged": [i for i in posted if i not in acknowledged][:20],
    }
    print(json.dumps(summary), flush=True)
    return 0 if len(acknowledged) == len(posted) else 1


def main(argv=None):
    p = argparse.ArgumentParser(description="post events while a release is upgraded")
    p.add_argument("url", help="the api's base URL (its Service)")
    p.add_argument("--prefix", required=True, help="event ids are <prefix>-<n>")
    p.add_argument("--type", required=True, help="the events' type (a COUNT meter of the release counts it)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long new events are made")
    p.add_argument("--rate", type=float, default=200.0, help="new events per second")
    p.add_argument("--batch", type=int, default=50, help="events per request")
    p.add_argument("--retry-for", type=float, default=120.0, help="how long an unacknowledged batch is retried")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
