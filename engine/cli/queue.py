"""The queue: where each queued run would start or why it waits, and the user's say over
it (priority, hold, release)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from engine.cli.output import EXIT_NOT_FOUND, print_json, table
from engine.model import (
    Run,
)

if TYPE_CHECKING:
    from engine.client import Client

SCREENFUL = 50  # queued runs `engine queue` lists unless told


async def cmd_queue(engine: Client, args: argparse.Namespace) -> int:
    limit = args.limit if args.limit is not None else (None if args.json else SCREENFUL)
    view = await engine.queue(limit=limit or None)
    entries = view.entries
    if args.json:
        print_json(entries)
        return 0
    rows = [
        (
            str(e.run.id),
            e.run.name[:24],
            str(e.run.priority),
            _asks(e.run),
            e.run.sweep or "-",
            e.reason,
        )
        for e in entries
    ]
    print(table(rows, ("ID", "NAME", "PRIO", "ASKS", "SWEEP", "WHERE / WHY IT WAITS")))
    if view.total > len(entries):
        print(f"… {len(entries)} of {view.total:,} queued shown; --limit 0 shows all")
    return 0


async def cmd_plan(engine: Client, args: argparse.Namespace) -> int:
    entries = (await engine.queue()).entries
    if args.runs:
        wanted = set(args.runs)
        entries = [e for e in entries if str(e.run.id) in wanted or e.run.name in wanted]
        missing = wanted - {str(e.run.id) for e in entries} - {e.run.name for e in entries}
        if missing:
            print(f"engine plan: not queued: {', '.join(sorted(missing))}", file=sys.stderr)
            return EXIT_NOT_FOUND
    if args.json:
        print_json({str(e.run.id): e.reason for e in entries})
        return 0
    for e in entries:
        print(f"run {e.run.id} ({e.run.name}): {e.reason}")
    return 0


def _asks(run: Run) -> str:
    r = run.resources
    parts = []
    if r.gpus:
        parts.append(f"{r.gpus} GPU" + (f" {r.gpu_mem_gb:g}G" if r.gpu_mem_gb else " whole"))
    if r.cpus:
        parts.append(f"{r.cpus:g} CPU")
    if r.mem_gb:
        parts.append(f"{r.mem_gb:g}G RAM")
    if run.requires:
        parts.append("needs " + ",".join(run.requires))
    return " ".join(parts) or "-"


async def cmd_priority(engine: Client, args: argparse.Namespace) -> int:
    run = await engine.set_priority(args.run, args.priority)
    if args.json:
        print_json(run)
    print(f"run {run.id}: priority {run.priority}", file=sys.stderr)
    return 0


async def cmd_hold(engine: Client, args: argparse.Namespace) -> int:
    run = await (engine.hold(args.run) if args.cmd == "hold" else engine.release(args.run))
    if args.json:
        print_json(run)
    print(f"run {run.id}: {'held' if run.held else 'released'}", file=sys.stderr)
    return 0


COMMANDS = {
    "queue": cmd_queue,
    "plan": cmd_plan,
    "priority": cmd_priority,
    "hold": cmd_hold,
    "release": cmd_hold,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs of the queue."""
    p = sub.add_parser(
        "queue", help="queued runs in planning order: where each goes, or why it waits"
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"show the first N in planning order (default {SCREENFUL}; with --json, all); 0: all",
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("plan", help="explain where queued runs would start now, or why they wait")
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (default: all queued)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("priority", help="set a queued run's priority (higher first)")
    p.add_argument("run", help="run id, name or @alias")
    p.add_argument("priority", type=int)
    p.add_argument("--json", action="store_true", help="print the run")
    for name, text in (
        ("hold", "keep a queued run from starting"),
        ("release", "let a held run start"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run id, name or @alias")
        p.add_argument("--json", action="store_true", help="print the run")
