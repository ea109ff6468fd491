"""Which PostgreSQL server the local stack runs: the newest installed major from 15 on, 18 and later included."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.stack import servers


def installed(root: Path, *majors: str) -> Path:
    for major in majors:
        bindir = root / major / "bin"
        bindir.mkdir(parents=True)
        (bindir / "initdb").write_text("#!/bin/sh\n")
        (bindir / "initdb").chmod(0o755)
    return root


@pytest.fixture
def no_initdb_on_path(monkeypatch):
    monkeypatch.delenv("BPOM_PG_BINDIR", raising=False)
    monkeypatch.setattr(servers, "which", lambda *names: None)


@pytest.mark.parametrize(
    ("majors", "chosen"),
    [(("15", "16", "17", "18"), "18"), (("15", "19"), "19"), (("18",), "18"), (("9.6", "14", "16"), "16")],
)
def test_the_newest_supported_major_is_chosen(tmp_path, no_initdb_on_path, majors, chosen):
    root = installed(tmp_path, *majors)
    assert servers.pg_bindir(root) == root / chosen / "bin"


def test_only_older_majors_installed_says_which_are_needed(tmp_path, no_initdb_on_path):
    with pytest.raises(servers.ServerError, match="15 or newer"):
        servers.pg_bindir(installed(tmp_path, "13", "14"))


def test_the_environment_and_path_come_first(tmp_path, monkeypatch):
    monkeypatch.setenv("BPOM_PG_BINDIR", str(tmp_path / "given"))
    assert servers.pg_bindir(installed(tmp_path / "lib", "18")) == tmp_path / "given"
