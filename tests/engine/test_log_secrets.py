"""NATS credentials never reach a log line, through an outage and reconnect of the server.

The engine used to log the server it reconnected to as the URL's network location,
which carries `user:password@` (or the token); every reconnect wrote the secret to
the pod's log.
"""

from __future__ import annotations

import pytest

from testkit.client import OpenMeterClient, event
from testkit.stack.local import start_local_stack
from testkit.stack.servers import NatsServer, Servers
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers


def _reconnected(stack) -> bool:
    logs = stack.log_files()
    return all("nats reconnected" in logs[name].read_text(errors="replace") for name in ("api", "sink-0"))


@pytest.mark.parametrize("auth", ["user-password", "token-as-user"])
def test_nats_credentials_never_reach_a_log_line(servers, tmp_path, auth, uid):
    secret = f"s3cret-{uid}"
    if auth == "user-password":
        options, userinfo = ["--user", f"metering-{uid}", "--pass", secret], f"metering-{uid}:{secret}"
    else:
        options, userinfo = ["--auth", secret], secret
    nats_server = NatsServer(workdir=tmp_path / "nats", options=options).start()
    try:
        url = f"nats://{userinfo}@127.0.0.1:{nats_server.port}"
        stack = start_local_stack(tmp_path / "engine", Servers(servers.postgres_url, url, servers.valkey_url))
        try:
            nats_server.restart()
            assert poll(lambda: _reconnected(stack), bool, TIMEOUTS.engine_ready).last, "api and sink reconnect to NATS"
            with OpenMeterClient(stack.api_url) as client:
                # Ingest answers 503 until the api's JetStream context answers again.
                assert poll(
                    lambda: client.post_events(event(f"after-{uid}", "t", "s")).status_code,
                    lambda s: s == 204,
                    TIMEOUTS.engine_ready,
                ).done, "ingest answers 204 again"
                client.wait_stored(f"after-{uid}", 1)
        finally:
            stack.stop()
    finally:
        nats_server.stop()

    logs = stack.log_files()
    assert {"api", "sink-0", "migrate"} <= set(logs)
    leaks = [
        f"{name}: {line}"
        for name, path in logs.items()
        for line in path.read_text(errors="replace").splitlines()
        if secret in line or userinfo in line
    ]
    assert not leaks, "credentials in the logs:\n" + "\n".join(leaks)
    reconnects = [line for line in logs["api"].read_text().splitlines() if "nats reconnected" in line]
    assert f"127.0.0.1:{nats_server.port}" in reconnects[0], reconnects[0]
