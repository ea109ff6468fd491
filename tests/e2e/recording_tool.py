"""Stand-in command-line tools that record how they were called, and a reader of helm's options.

A test builds one with `recording_tool(folder, "docker", script)`: an executable that
appends `{"argv": [...], "stdin": "...", "env": {...}}` to a log, then runs `script`
(Python, with `args` bound to its arguments) to answer. So a test runs the real code
path (subprocess, PATH or an explicit binary) and checks what the tool received,
by meaning (`helm_options`), not as a copy of the implementation's argument list.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_KEYS = ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")


@dataclass(frozen=True)
class RecordingTool:
    path: Path
    log: Path

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def recording_tool(folder: Path, name: str, script: str = "") -> RecordingTool:
    folder.mkdir(parents=True, exist_ok=True)
    path, log = folder / name, folder / f"{name}.calls.jsonl"
    path.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "-" in args else ""   # only a tool told to read stdin does (apply --filename -)
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps({{"argv": args, "stdin": stdin,
                         "env": {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}}}) + "\\n")
{script}
""")
    path.chmod(0o755)
    return RecordingTool(path, log)


def helm_options(argv: list[str]) -> argparse.Namespace:
    """What a helm command line asks for, as helm reads it (flags in any order)."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    parser.add_argument("words", nargs="*")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--repo")
    parser.add_argument("--version")
    parser.add_argument("--namespace")
    parser.add_argument("--create-namespace", action="store_true")
    parser.add_argument("--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--wait", nargs="?", const="watcher", default=None)  # helm 4: a strategy
    parser.add_argument("--wait-for-jobs", action="store_true")
    parser.add_argument("--timeout")
    options, unknown = parser.parse_known_intermixed_args(argv)
    assert not unknown, f"flags helm_options does not know: {unknown}"
    return options
