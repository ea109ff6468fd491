"""`python -m testkit.stack`: the whole engine stack on this machine, in the foreground.

Starts PostgreSQL, nats-server (JetStream) and Valkey (or uses BPOM_TEST_*_URL), runs
`bp-openmeter migrate`, starts `bp-openmeter api` and `bp-openmeter sink`, prints where
everything listens and an example, and stops it all on Ctrl-C. The virtualenv need not
be active: `.venv/bin/python -m testkit.stack` finds the nats-server that
`pip install -e '.[test]'` put beside that interpreter.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import orjson
import yaml

from testkit.paths import FIXTURES
from testkit.quickstart import QUICKSTART_EVENT
from testkit.stack.local import start_local_stack
from testkit.stack.servers import ServerError, postgres_cannot_reach, start_servers

EXAMPLE = """\
Post an event and query it:

  curl -si -X POST {api}/api/v1/events -H 'content-type: application/cloudevents+json' \\
    -d '{event}'
  curl -s '{api}/api/v1/meters/api_calls/query?windowSize=HOUR&windowTimeZone=Asia/Muscat'

Logs: {logs}
Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.stack", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        help="where everything of the stack lives: each server's data, sockets and log, the engine's config and "
        "logs (default: a new temp folder). As root, PostgreSQL runs as its own user ('postgres', else 'nobody': "
        "it refuses root), which must be able to enter every folder on the way to DIR, else the stack stops "
        "before it starts",
    )
    parser.add_argument(
        "--meters",
        type=Path,
        default=FIXTURES / "meters.yaml",
        help="YAML list of meters to declare (default: fixtures/meters.yaml)",
    )
    parser.add_argument("--port", type=int, default=8888, help="API port (telemetry: --port + 2112)")
    args = parser.parse_args(argv)

    if not args.meters.is_file():
        parser.error(f"--meters {args.meters}: no such file (a YAML list of meters, like fixtures/meters.yaml)")
    root = args.dir
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="bp-openmeter-stack-"))
        root.chmod(0o711)  # mkdtemp's 0700 would keep PostgreSQL's own user out (as root)
    if not os.environ.get("BPOM_TEST_POSTGRES_URL") and (blocked := postgres_cannot_reach(root / "servers")):
        print(f"error: --dir {root}: {blocked}", file=sys.stderr)
        return 2
    meters = yaml.safe_load(args.meters.read_text()) or []
    if isinstance(meters, dict):
        meters = meters.get("meters", [])
    # Installed first: a Ctrl-C while the servers start stops them once they are up, never leaves them running.
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        servers = start_servers(root / "servers")
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        stack = start_local_stack(
            root / "engine",
            servers,
            meters,
            overrides={"namespace": "default"},
            api_port=args.port,
            telemetry_port=args.port + 2112,
        )
    except ServerError as exc:
        servers.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(
        f"PostgreSQL  {stack.database_url}\nNATS        {servers.nats_url}\nValkey      {servers.valkey_url}\n"
        f"API         {stack.api_url}\ntelemetry   {stack.telemetry_url}  (/metrics, /healthz/ready)\n"
    )
    print(EXAMPLE.format(api=stack.api_url, logs=root, event=orjson.dumps(QUICKSTART_EVENT).decode()), flush=True)
    stop.wait()
    stack.stop()
    servers.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
