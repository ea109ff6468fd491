"""`bp-openmeter <command> --help` lists every option that command accepts, each with its meaning.

A newcomer reads a command's help, not the top-level one: an option the command takes
(`--config` above all) but its help leaves out is an option they never learn of.
"""

from __future__ import annotations

import argparse
import re

import pytest

from bp_openmeter.cli import build_parser
from tests.engine.engine_cli import run_cli

_ENTRY = re.compile(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$")


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _listed_options(help_text: str) -> dict[str, str]:
    """Each option string of the help's `options:` section -> its meaning (argparse's layout)."""
    listed: dict[str, str] = {}
    current: list[str] = []
    section = help_text.split("\noptions:\n", 1)[1]
    for line in section.splitlines():
        if not line.strip():
            break
        entry = _ENTRY.match(line)
        if entry:
            current = [word.split(" ")[0] for word in entry[1].split(", ")]
            for option in current:
                listed[option] = entry[2] or ""
        else:
            for option in current:
                listed[option] = f"{listed[option]} {line.strip()}".strip()
    return listed


@pytest.mark.parametrize("command", sorted(_commands()))
def test_a_commands_help_lists_every_option_it_accepts(command):
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    listed = _listed_options(done.stdout)
    accepted = [o for action in _commands()[command]._actions for o in action.option_strings]
    assert "--config" in accepted, f"{command} must accept --config like every command"
    for option in accepted:
        assert listed.get(option), f"`bp-openmeter {command} --help` does not explain {option}:\n{done.stdout}"


@pytest.mark.parametrize("before", [True, False])
def test_config_is_taken_before_or_after_the_command(tmp_path, before):
    missing = tmp_path / "absent.yaml"
    argv = ["--config", str(missing), "check-config"] if before else ["check-config", "--config", str(missing)]
    done = run_cli(*argv)
    assert done.returncode == 2 and f"{missing}: cannot read the config file" in done.stderr, done.stderr
