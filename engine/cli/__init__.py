"""The headless CLI: parses arguments, calls the daemon through `engine.client`, prints.

stdout carries data (tables, or stable JSON with --json); stderr carries diagnostics.
Exit codes: 0 done; 1 the daemon refused or a waited run failed without an exit code;
2 bad usage or configuration; 3 no such run; `run --wait` exits with the run's exit code.

Each module here is one group of verbs: it registers their subcommands and names the function
of each in its COMMANDS. None imports the
client at load time, so `engine --help` and the verbs that need no daemon start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from engine.cli import aliases, completion, hosts, local, queue, runs, sweeps
from engine.cli.output import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_USAGE
from engine.errors import ConfigError, DaemonError, EngineError
from engine.paths import CONFIG_NAME

GROUPS = (local, completion, runs, sweeps, aliases, queue, hosts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Runyard's headless engine: run, watch and record training jobs.",
    )
    parser.add_argument("--version", action="version", version=f"engine (runyard) {_version()}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"the {CONFIG_NAME} to use (default: $RUNYARD_CONFIG, else the nearest {CONFIG_NAME})",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
        # A verb of `local` (or `completion`) runs here on its arguments alone; any other is
        # handed a client.
        kind = "local" if group in (local, completion) else "handler"
        for name, command in group.COMMANDS.items():
            sub.choices[name].set_defaults(**{kind: command})
    return parser


def _version() -> str:
    """This installation's version, from its package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runyard")
    except PackageNotFoundError:
        return "(not installed)"


async def _with_client(args: argparse.Namespace) -> int:
    from engine.client import connect

    engine = await connect(args.config)
    try:
        return await args.handler(engine, args)
    finally:
        await engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    for word in words:
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            shown = word.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            print(f"engine: argument {shown!r} is not valid UTF-8 text", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answered, then exit
        completion.complete(parser)
    args = parser.parse_args(words)
    if getattr(args, "limit", None) is not None and args.limit < 0:
        print("engine runs: --limit must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        if hasattr(args, "local"):
            return args.local(args)
        import asyncio  # only for the verbs that talk to the daemon

        return asyncio.run(_with_client(args))
    except ConfigError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DaemonError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND if exc.status == 404 else EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
