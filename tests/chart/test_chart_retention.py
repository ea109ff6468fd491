"""retention.rawEvents: off by default, a value reaches the engine's config as the engine reads
it, and a value helm cannot pass as a duration fails at install naming the key."""

from __future__ import annotations

import pytest

from testkit.chart.render import RenderError, names_key, render_chart
from tests.chart.test_chart_engine_pods import config_of

pytestmark = pytest.mark.helm


def test_raw_events_are_kept_forever_by_default():
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    rendered = config_of(render_chart({}))
    assert rendered["retention"] == {"rawEvents": ""}
    assert engine_config.build_config(rendered).retention.raw_events is None


def test_a_retention_reaches_the_engine():
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    rendered = config_of(render_chart({"retention": {"rawEvents": "2160h"}}))
    assert engine_config.build_config(rendered).retention.raw_events == 90 * 86400.0


@pytest.mark.parametrize("value", ["90d", "forever", 30])
def test_a_retention_that_is_no_duration_fails_at_install(value):
    with pytest.raises(RenderError) as failure:
        render_chart({"retention": {"rawEvents": value}})
    assert names_key(str(failure.value), "retention.rawEvents"), str(failure.value)
