"""What each engine component must reach has one home (testkit/netpol/needs.py); the docs are generated from it."""

from __future__ import annotations

import pytest

from testkit.netpol.needs import NEEDS, TABLE_END, TABLE_START, destinations, network_table, peers_of
from testkit.paths import DOCS

AT = {"postgres": {"pg:5432"}, "nats": {"nats:4222"}, "valkey": {"valkey:6379"}, "dns": {"dns:53"}}


def test_engine_runtime_docs_show_the_table_generated_from_the_home():
    text = (DOCS / "engine-runtime.md").read_text()
    assert TABLE_START in text and TABLE_END in text, f"docs/engine-runtime.md needs the {TABLE_START} block"
    published = TABLE_START + text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0] + TABLE_END
    assert published == network_table(), (
        "docs/engine-runtime.md's network table is not the one "
        "testkit/netpol/needs.py gives; replace its block with the output of "
        "`python -m testkit.netpol.needs`"
    )


def test_destinations_follow_the_needs_of_each_component():
    reach = destinations(AT)
    assert reach == {
        "api": {"pg:5432", "nats:4222", "valkey:6379", "dns:53"},
        "sink": {"pg:5432", "nats:4222", "dns:53"},
        "migrate": {"pg:5432", "dns:53"},
        "export": {"pg:5432", "nats:4222", "dns:53"},
    }
    assert set(reach) == set(NEEDS)


def test_a_peer_switched_off_in_the_values_is_not_needed():
    assert "valkey" in peers_of("api", {"valkey": {"enabled": True}})
    assert "valkey" not in peers_of("api", {"valkey": {"enabled": False}})
    assert destinations(AT, ["api"], {"valkey": {"enabled": False}})["api"] == {"pg:5432", "nats:4222", "dns:53"}
    with pytest.raises(KeyError, match="valkey.enabled"):
        peers_of("api", {})


@pytest.mark.parametrize(
    "export, needs_nats",
    [
        ({"waitDrained": "10m", "verify": False}, True),
        ({"waitDrained": "", "verify": False}, False),  # no waiting for the sink: no JetStream
        ({"waitDrained": "10m", "verify": True}, False),  # --verify exports nothing and waits for nothing
    ],
)
def test_the_export_needs_jetstream_only_while_it_waits_for_the_sink(export, needs_nats):
    values = {"valkey": {"enabled": True}, "export": export}
    assert ("nats" in peers_of("export", values)) is needs_nats
    assert {"postgres", "dns"} <= set(peers_of("export", values))
