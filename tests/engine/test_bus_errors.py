"""Every error nats-py defines is one that publishing turns into BusUnavailable (a 503), never a 500.

tests/faults/test_jetstream_r3.py sees the ones a 3-node cluster produces when it loses
its stream's leader or its quorum; this holds the mapping to every error class of the
installed nats-py, so a class added by a new release of it cannot slip through.
"""

from __future__ import annotations

import inspect

import nats.errors
import nats.js.errors

from bp_openmeter.bus import PUBLISH_FAILURES


def test_every_nats_py_error_is_a_publish_failure():
    classes = [
        cls
        for module in (nats.errors, nats.js.errors)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__.startswith("nats")
    ]
    assert len(classes) > 30, "nats-py's error classes were not found"
    assert [cls.__name__ for cls in classes if not issubclass(cls, PUBLISH_FAILURES)] == []
    assert issubclass(nats.js.errors.NoStreamResponseError, PUBLISH_FAILURES)
    assert issubclass(nats.errors.TimeoutError, PUBLISH_FAILURES)
