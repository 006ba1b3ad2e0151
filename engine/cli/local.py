"""The verbs that need no running daemon: write a starter project, check files, serve (be the
daemon), and stop it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.output import EXIT_REFUSED, EXIT_USAGE, print_json
from engine.errors import ConfigError, EngineError
from engine.paths import CONFIG_NAME, lock_holder, pid_alive, socket_path

if TYPE_CHECKING:
    pass

STOP_WAIT_S = 5.0  # for the daemon to stop when asked, then again on SIGTERM

STARTER_HOSTS = """\
# Runyard: the machines this project runs on, and routing rules.
[engine]
state_dir = "runs"          # store.duckdb, the daemon socket, run folders (relative to this file)

[hosts.local]
kind = "local"
max_jobs = 2                # concurrent runs on this machine
tags = ["cpu"]
"""


def cmd_init(args: argparse.Namespace) -> int:
    target = Path.cwd() / CONFIG_NAME
    if target.exists():
        print(f"engine init: {target} already exists; leaving it as it is", file=sys.stderr)
        return EXIT_USAGE
    target.write_text(STARTER_HOSTS)
    experiments = Path.cwd() / "experiments"
    experiments.mkdir(exist_ok=True)
    ignored = _ignore_in_git(Path.cwd(), "runs/")
    if args.json:
        made = {"config": str(target), "experiments": str(experiments)}
        print_json(made | {"gitignore": str(ignored) if ignored else None})
    also = f", and added runs/ to {ignored}" if ignored else ""
    print(f"wrote {target} and experiments/{also}", file=sys.stderr)
    return 0


def _ignore_in_git(project: Path, entry: str) -> Path | None:
    """Add the state directory to the project's .gitignore (creating it), so the store is
    never committed; the file changed, or None when it listed the entry already."""
    path = project / ".gitignore"
    text = path.read_text() if path.exists() else ""
    if entry in text.splitlines() or entry.rstrip("/") in text.splitlines():
        return None
    sep = "" if not text or text.endswith("\n") else "\n"
    path.write_text(f"{text}{sep}# Runyard's state: the store, run folders, snapshots\n{entry}\n")
    return path


def cmd_validate(args: argparse.Namespace) -> int:
    """Read hosts.toml and each experiment file as the daemon would, and plan each sweep; the
    first problem of each file is one line on stderr."""
    from engine import sweep
    from engine.config import find_config, load_config, load_experiment

    config = load_config(find_config(args.config))
    print(f"{config.path}: {len(config.hosts)} hosts, {len(config.routes)} routes", file=sys.stderr)
    failed = 0
    for file in args.files:
        try:
            experiment = load_experiment(file)
            if not sweep.is_adaptive(experiment):
                sweep.trials(experiment)
        except (ConfigError, sweep.SweepError) as exc:
            print(f"engine: {exc}", file=sys.stderr)
            failed += 1
            continue
        runs = sweep.total_runs(experiment)
        print(f"{experiment.path}: {runs} runs ({experiment.method})", file=sys.stderr)
    return EXIT_USAGE if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.config import find_config, load_config
    from engine.daemon import run_daemon  # the daemon's own weight, for it alone

    return run_daemon(load_config(find_config(args.config)), announce=args.json)


def cmd_stop(args: argparse.Namespace) -> int:
    import asyncio

    stopped: dict[str, object] = {"pid": None, "stopped": False}
    code = asyncio.run(_stop(args.config, stopped))
    if args.json:
        print_json(stopped)
    return code


async def _stop(config_path: str | None, stopped: dict[str, object]) -> int:
    """Ask the daemon to stop and wait until its process has gone; where it does not within
    STOP_WAIT_S, send it SIGTERM, and where even that fails, say so (exit 1)."""
    from engine.client import Client, probe
    from engine.config import find_config, load_config

    config = load_config(find_config(config_path))
    sock = socket_path(config.state_dir)
    status = await probe(sock)
    if status is None:
        held = lock_holder(config.state_dir)
        if held is None:
            print(f"engine stop: no daemon serves {config.state_dir}", file=sys.stderr)
            return 0  # {"pid": null, "stopped": false}: there was nothing to stop
        pid = held  # it holds the state directory but does not answer: only a signal reaches it
        print(f"engine stop: daemon {pid} does not answer; sending it SIGTERM", file=sys.stderr)
    else:
        pid = status.pid
        client = Client(sock, config)
        try:
            await client.shutdown()
        except EngineError:
            pass  # it may have gone while answering; its pid says
        finally:
            await client.close()
    stopped["pid"] = pid
    if not await _gone(pid, STOP_WAIT_S):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not await _gone(pid, STOP_WAIT_S):
            print(
                f"engine stop: daemon {pid} did not stop within {2 * STOP_WAIT_S:g}s, even on "
                f"SIGTERM; it may still serve {config.state_dir}. See "
                f"{config.state_dir / 'daemon.log'}; `kill -9 {pid}` ends it (runs keep going)",
                file=sys.stderr,
            )
            return EXIT_REFUSED
    stopped["stopped"] = True
    print(f"engine daemon {pid} stopped; runs keep going", file=sys.stderr)
    return 0


async def _gone(pid: int, within: float) -> bool:
    """Whether process `pid` has exited (or is a zombie) within `within` seconds."""
    import asyncio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


COMMANDS = {"serve": cmd_serve, "stop": cmd_stop, "init": cmd_init, "validate": cmd_validate}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs run here without a daemon; each takes the parsed arguments alone."""
    p = sub.add_parser("serve", help="run the daemon in the foreground")
    p.add_argument(
        "--json",
        action="store_true",
        help='once serving, print {"pid", "state_dir", "socket"} as one line',
    )
    p = sub.add_parser("stop", help="stop the daemon (runs keep going)")
    p.add_argument("--json", action="store_true", help='{"pid", "stopped"}')
    p = sub.add_parser("init", help=f"write a starter {CONFIG_NAME} and experiments/ here")
    p.add_argument("--json", action="store_true", help='{"config", "experiments", "gitignore"}')
    p = sub.add_parser(
        "validate", help=f"check {CONFIG_NAME} and experiment files without running anything"
    )
    p.add_argument("files", nargs="*", metavar="EXPERIMENT", help="experiment files to check")
