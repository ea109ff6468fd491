"""The meters a config file declares are checked once, the same way by every command that
reads them: `check-config` refuses what `migrate` (and the api and sink) would refuse."""

from __future__ import annotations

import pytest
import yaml

from tests.engine.engine_cli import run_cli

METER = {"slug": "tokens", "eventType": "prompt", "aggregation": "SUM", "valueProperty": "$.tokens"}


@pytest.mark.parametrize("command", ["check-config", "migrate"])
def test_a_slug_declared_twice_is_refused(tmp_path, command):
    path = tmp_path / "config.yaml"
    # The database is out of reach on purpose: the meters are refused before it is needed.
    path.write_text(
        yaml.safe_dump(
            {
                "postgres": {"url": "postgresql://nobody@127.0.0.1:9/none"},
                "meters": [METER, {**METER, "aggregation": "MAX"}],
            }
        )
    )
    done = run_cli(command, config=path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "meters: slug 'tokens' is declared more than once" in done.stderr, done.stderr
