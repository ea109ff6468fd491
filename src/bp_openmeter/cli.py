"""`bp-openmeter` command line: api, sink, migrate, export, check-config, version."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Coroutine

import yaml

from . import __version__
from .config import ConfigError, load_config


def _cmd_version(_args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        from .meters import config_meter_specs

        config_meter_specs(cfg.meters)
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    for key, value in cfg.redacted().items():
        print(f"{key}: {_yaml_flow(value)}")
    return 0


def _yaml_flow(value: object) -> str:
    """`value` as YAML on one line, as a config file may write it after its key: a string
    unquoted unless YAML would read it as something else ('', 'bpom:default:')."""
    if isinstance(value, str) and value.strip() == value and "\n" not in value:
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 30, sort_keys=False).strip()[1:-1]


def _cmd_migrate(args: argparse.Namespace) -> int:
    from .runtime import run_migrate

    return run_migrate(args.config)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (it halves the event loop's own cost per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _cmd_api(args: argparse.Namespace) -> int:
    from .runtime import run_api

    return _run(run_api(args.config))


def _cmd_sink(args: argparse.Namespace) -> int:
    from .runtime import run_sink

    return _run(run_sink(args.config))


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.command import run

    return run(args)


CONFIG_HELP = "config file (default: $BPOM_CONFIG, else /etc/bp-openmeter/config.yaml, else built-in defaults)"


def _config_option(parser: argparse.ArgumentParser, default: object = None) -> None:
    # Accepted before and after the command name; the sub-command's copy must not reset what
    # was given before it, hence no default there.
    parser.add_argument("--config", metavar="PATH", default=default, help=CONFIG_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every option a command takes is listed in that command's --help."""
    parser = argparse.ArgumentParser(prog="bp-openmeter", description=__doc__)
    _config_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, func, text in (
        ("api", _cmd_api, "serve the OpenMeter v1 HTTP API"),
        ("sink", _cmd_sink, "store events from JetStream into PostgreSQL and maintain rollups"),
        ("migrate", _cmd_migrate, "apply database migrations and the config file's meters"),
        ("check-config", _cmd_check_config, "validate the configuration and print it (secrets redacted)"),
        ("version", _cmd_version, "print the engine version"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        _config_option(cmd, default=argparse.SUPPRESS)
        cmd.set_defaults(func=func)
    text = "stream the stored events to another OpenMeter-v1 ingest endpoint (resumable), or --verify"
    cmd = sub.add_parser("export", help=text, description=text)
    _config_option(cmd, default=argparse.SUPPRESS)
    from .export.command import add_arguments

    add_arguments(cmd)
    cmd.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
