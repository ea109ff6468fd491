"""The default-deny canary's logic: when the NetworkPolicy tests run, fail or skip. They never pass unseen."""

from __future__ import annotations

import pytest

from e2e.lib import canary
from e2e.lib.canary import judge
from e2e.lib.probes import Observation
from testkit.chart.schemas import validate_object
from testkit.netpol.truth_table import Outcome
from testkit.wait import Polled

ALLOWED = Observation(Outcome.ALLOWED, "allowed", "connected in 0.001s")
BLOCKED = Observation(Outcome.BLOCKED, "timeout", "timed out after 3.00s")
ERROR = Observation(Outcome.PROBE_ERROR, "pod-gone", 'pods "canary-client" not found')


def p(observation: Observation, waited: float = 4.0, attempts: int = 2) -> Polled:
    return Polled(observation, waited, attempts)


@pytest.mark.parametrize(
    "before, after, known, action, words",
    [
        (ALLOWED, BLOCKED, False, "run", "default-deny enforced: the client was blocked 4s after"),
        (ALLOWED, BLOCKED, True, "run", "although --cni-not-enforcing was given"),
        (ALLOWED, ALLOWED, False, "fail", "does not enforce NetworkPolicy"),
        (ALLOWED, ALLOWED, True, "skip", "--cni-not-enforcing says this cluster is known not to enforce"),
        (ALLOWED, ERROR, False, "fail", "the probe itself failed"),
        (ALLOWED, ERROR, True, "fail", "the probe itself failed"),
        (BLOCKED, None, False, "fail", "with no policy, the client could not reach the server"),
        (BLOCKED, None, True, "fail", "with no policy"),
        (ERROR, None, False, "fail", "the probe or the pod network is broken"),
    ],
)
def test_judge(before, after, known, action, words):
    verdict = judge(p(before), p(after) if after else None, known)
    assert verdict.action == action and words in verdict.message, verdict


def test_a_plugin_that_does_not_enforce_fails_with_how_to_fix_it():
    verdict = judge(p(ALLOWED), p(ALLOWED, waited=60, attempts=30), False)
    assert verdict.action == "fail"
    assert "60s after a default-deny policy was created (30 probes)" in verdict.message
    assert "--cni-not-enforcing" in verdict.message and "kind" in verdict.message


def test_only_a_seen_block_lets_the_tests_run():
    for before in (ALLOWED, BLOCKED, ERROR):
        for after in (ALLOWED, BLOCKED, ERROR, None):
            for known in (False, True):
                verdict = judge(p(before), p(after) if after else None, known)
                if verdict.action == "run":
                    assert before is ALLOWED and after is BLOCKED


def test_deny_all_is_a_valid_policy_isolating_both_directions():
    policy = canary.deny_all("bpom-canary-rtest")
    validate_object(policy)
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
