"""The prerequisite check keeps its promise on a slow line: downloads first, with a limit of their own, then
the checks under theirs; whatever did not answer in time is listed by name, and a step past its deadline ends
the run with a message, never a traceback."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from e2e.lib import flow, prereqs
from e2e.lib.options import parse
from e2e.lib.progress import step

RELEASE = threading.Event()  # set at teardown: lets the stalled stand-ins end


@pytest.fixture(autouse=True)
def _release_stalled():
    RELEASE.clear()
    yield
    RELEASE.set()


def stalled(*args):
    """A download or a server that never finishes (the teardown lets it go)."""
    RELEASE.wait(60)
    raise AssertionError("a stalled stand-in was waited for")


def deadlines(monkeypatch, **seconds):
    monkeypatch.setattr(flow, "TIMEOUTS", dataclasses.replace(flow.TIMEOUTS, **seconds))


def _plan():
    return flow.make_plan(parse(["all", "--run-id", "rdead"]))


def quick_host(**kw):
    kw.setdefault("probe", lambda url, timeout: 200)
    kw.setdefault("inotify_read", lambda name: "1048576")
    kw.setdefault("disk_usage", lambda path: shutil._ntuple_diskusage(100 * 2**30, 0, 100 * 2**30))
    kw.setdefault("docker_hub_allowance", lambda: None)
    return kw


def test_checks_that_do_not_answer_in_time_are_listed_by_name_and_the_rest_reported():
    started = time.monotonic()
    checks = prereqs.run_all(
        {
            "chart repository of prometheus-operator-crds": stalled,
            "docker": lambda: prereqs.Check("docker", True, "/usr/bin/docker"),
        },
        deadline=0.5,
        deadline_name="prerequisites",
    )
    assert time.monotonic() - started < 5
    slow, docker = checks
    assert docker.ok
    assert not slow.ok and slow.name == "chart repository of prometheus-operator-crds"
    assert "no answer within 0.5s" in slow.detail and "BPOM_TIMEOUT_PREREQUISITES" in slow.fix


def test_a_check_that_raises_is_a_missing_prerequisite_naming_the_error():
    def broken():
        raise ValueError("index.yaml: entries is a list")

    (check,) = prereqs.run_all({"chart nats": broken}, deadline=5, deadline_name="prerequisites")
    assert not check.ok and "ValueError: index.yaml: entries is a list" in check.detail


def test_a_stalled_download_ends_the_preflight_within_its_own_limit_naming_it(monkeypatch):
    deadlines(monkeypatch, tool_downloads=1.0, prerequisites=5.0)
    started = time.monotonic()
    with pytest.raises(prereqs.PrerequisitesMissing) as info:
        flow.preflight(_plan(), ("up",), kind_obtain=stalled, **quick_host())
    assert time.monotonic() - started < 15
    message = str(info.value.code)
    assert "MISSING kind v0.33.0: no answer within 1s" in message, message
    assert "BPOM_TIMEOUT_TOOL_DOWNLOADS" in message


def test_downloads_do_not_eat_into_the_checks_deadline(monkeypatch):
    """kind takes longer than the checks may: it is fetched first, under its own limit, and passes."""

    def slow_download(version):
        time.sleep(1.5)
        return Path("/usr/local/bin/kind")

    deadlines(monkeypatch, tool_downloads=30.0, prerequisites=1.0)
    checks = flow.run_prerequisites(
        flow.checks_for(_plan(), ("up",), kind_obtain=slow_download, **quick_host()), "`e2e up`"
    )
    kind = next(c for c in checks if c.name == "kind v0.33.0")
    assert kind.ok, kind


def test_a_step_past_its_deadline_ends_the_run_with_a_message_not_a_traceback(monkeypatch, capsys):
    def hanging_up(plan):
        with step("creating kind cluster bp-openmeter-e2e", waiting_for="kind create cluster", timeout=1.0, every=0.2):
            stalled()

    monkeypatch.setattr(flow, "preflight", lambda plan, steps, **kw: [])
    monkeypatch.setattr(flow, "up", hanging_up)
    assert flow.main(["up", "--run-id", "rdead"]) == 4
    err = capsys.readouterr().err
    assert (
        "creating kind cluster bp-openmeter-e2e: did not finish within 1s (was waiting for kind create cluster)" in err
    )
    assert "Traceback" not in err
