"""Shell completion by argcomplete, for bash, zsh and fish: verbs and flags from the parser,
and what only the project knows: run ids, names and @aliases and sweep ids (from a daemon that
is already running; completing never starts one), host names (from hosts.toml) and
experiment files. `engine completion SHELL` prints the script to source."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

SHELLS = ("bash", "zsh", "fish")
RECENT_RUNS = 200  # the newest runs offered for a run argument


def _ask(question: Callable[[Any], Any], parsed: argparse.Namespace) -> Any:
    """One question to the project's daemon, if one runs; None otherwise or on any error (a
    completion shows nothing rather than an error in the middle of the command line)."""
    import asyncio

    async def ask() -> Any:
        from engine.client import Client, load_project, probe
        from engine.paths import socket_path

        config = load_project(getattr(parsed, "config", None))
        sock = socket_path(config.state_dir)
        if await probe(sock) is None:
            return None
        client = Client(sock, config)
        try:
            return await question(client)
        finally:
            await client.close()

    with contextlib.suppress(Exception):
        return asyncio.run(ask())
    return None


def complete_runs(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> Iterable[str]:
    async def question(client: Any) -> list[str]:
        runs = await client.runs(limit=RECENT_RUNS)
        aliases = await client.aliases()
        return [
            *(f"@{a['name']}" for a in aliases),
            *(str(r.id) for r in runs),
            *dict.fromkeys(r.name for r in runs),
        ]

    found = _ask(question, parsed_args) or []
    return [word for word in found if word.startswith(prefix)]


def complete_sweeps(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> Iterable[str]:
    async def question(client: Any) -> list[str]:
        return [s.id for s in await client.sweeps()]

    return [s for s in _ask(question, parsed_args) or [] if s.startswith(prefix)]


def complete_hosts(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> Iterable[str]:
    from engine.client import load_project

    with contextlib.suppress(Exception):
        config = load_project(getattr(parsed_args, "config", None))
        return [h for h in config.hosts if h.startswith(prefix)]
    return []


def complete_experiments(prefix: str, **_: Any) -> Iterable[str]:
    from argcomplete.completers import FilesCompleter

    return FilesCompleter(("toml",))(prefix)


# Which completer an argument gets, by its destination.
BY_DEST = {
    "run": complete_runs,
    "runs": complete_runs,
    "baseline": complete_runs,
    "sweep": complete_sweeps,
    "host": complete_hosts,
    "file": complete_experiments,
    "files": complete_experiments,
}


def attach(parser: argparse.ArgumentParser) -> None:
    """Give every argument of every verb the completer its destination calls for (`name`
    is a host's in `engine host`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                for inner in sub._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        attach(sub)
                    elif inner.dest in BY_DEST:
                        inner.completer = BY_DEST[inner.dest]  # type: ignore[attr-defined]
                    elif verb == "host" and inner.dest == "name":
                        inner.completer = complete_hosts  # type: ignore[attr-defined]


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete exits when it has)."""
    import argcomplete

    attach(parser)
    argcomplete.autocomplete(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["engine"], shell=args.shell))
    return 0


COMMANDS = {"completion": cmd_completion}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verb that prints a shell's completion script."""
    p = sub.add_parser(
        "completion",
        help='print the shell completion script: eval "$(engine completion bash)"',
    )
    p.add_argument("shell", choices=SHELLS)
