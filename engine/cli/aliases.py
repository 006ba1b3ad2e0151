"""Aliases (a small model registry): name a run `champion`, move the name, see where it has
been, and promote a sweep's best run to a name; `@champion` then stands for the run in every
verb that takes one."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from engine.cli.output import EXIT_REFUSED, print_json, table

if TYPE_CHECKING:
    from engine.client import Client


def _moved(moved: dict, verb: str = "now") -> str:
    before = f" (was run {moved['previous']})" if moved.get("previous") is not None else ""
    return f"@{moved['name']} {verb} names run {moved['run']}{before}"


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


async def cmd_alias(engine: Client, args: argparse.Namespace) -> int:
    what = args.alias_cmd
    if what == "set":
        moved = await engine.set_alias(args.name, args.run, args.note, args.force)
        if args.json:
            print_json(moved)
        else:
            print(_moved(moved))
        return 0
    if what == "rm":
        moved = await engine.remove_alias(args.name)
        if args.json:
            print_json(moved)
        else:
            print(f"@{moved['name']} removed (it named run {moved['previous']})")
        return 0
    if what == "get":
        alias = await engine.alias(args.name)
        if args.path:
            if alias["artifact_dir"] is None:
                print(
                    f"engine alias get: run {alias['run']} has no artifacts folder on this machine",
                    file=sys.stderr,
                )
                return EXIT_REFUSED
            print(alias["artifact_dir"])
        elif args.json:
            print_json(alias)
        else:
            print(alias["run"])
        return 0
    if what == "history":
        moves = await engine.alias_history(args.name)
        if args.json:
            print_json(moves)
            return 0
        rows = [
            (
                _stamp(m["time"]),
                "-" if m["from"] is None else str(m["from"]),
                "(removed)" if m["to"] is None else str(m["to"]),
                m["note"] or "",
            )
            for m in moves
        ]
        print(table(rows, ("WHEN", "FROM", "TO", "NOTE")))
        return 0
    aliases = await engine.aliases()
    if args.json:
        print_json(aliases)
        return 0
    rows = [
        (
            "@" + a["name"],
            str(a["run"]),
            (a["run_name"] or "(run gone)")[:32],
            a["status"] or "-",
            a["sweep"] or "-",
            _stamp(a["set_at"]),
            a["note"] or "",
        )
        for a in aliases
    ]
    print(table(rows, ("ALIAS", "RUN", "NAME", "STATUS", "SWEEP", "SET", "NOTE")))
    return 0


async def cmd_promote(engine: Client, args: argparse.Namespace) -> int:
    """The best configuration's best run, by the sweep's metric, gets the alias."""
    best = await engine.best(args.sweep)
    if not best["configs"]:
        print(
            f"engine promote: no succeeded run of sweep {args.sweep} reported {best['metric']}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    config = best["configs"][0]
    note = args.note or (
        f"best of sweep {args.sweep}: {best['metric']} {config['mean']:.6g} mean over"
        f" {config['n']} runs"
    )
    moved = await engine.set_alias(args.to, config["best_run"], note)
    if args.json:
        print_json(moved)
    else:
        print(_moved(moved))
    return 0


COMMANDS = {"alias": cmd_alias, "promote": cmd_promote}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs of aliases."""
    p = sub.add_parser(
        "alias", help="name runs (champion, challenger): set, list, get, rm, history"
    )
    verbs = p.add_subparsers(dest="alias_cmd", required=True, metavar="ACTION")
    q = verbs.add_parser("set", help="point an alias at a run (made, or moved from its last run)")
    q.add_argument("name", help="letters, digits, '_', '.', '-'; e.g. champion")
    q.add_argument("run", help="run id, name or @alias")
    q.add_argument("--note", help="why: kept with the move in the alias's history")
    q.add_argument("--force", action="store_true", help="point at a run that has not succeeded too")
    q.add_argument("--json", action="store_true")
    q = verbs.add_parser("list", help="every alias and its run")
    q.add_argument("--json", action="store_true")
    q = verbs.add_parser("get", help="the run an alias names (its id)")
    q.add_argument("name")
    q.add_argument(
        "--path", action="store_true", help="print the run's artifacts folder on this machine"
    )
    q.add_argument("--json", action="store_true")
    q = verbs.add_parser("rm", help="remove an alias (kept in its history)")
    q.add_argument("name")
    q.add_argument("--json", action="store_true")
    q = verbs.add_parser("history", help="every move of an alias: from which run to which, when")
    q.add_argument("name")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("promote", help="give a sweep's best run (by its metric) an alias")
    p.add_argument("sweep")
    p.add_argument("--to", required=True, metavar="ALIAS", help="e.g. challenger")
    p.add_argument("--note", help="why (default: the sweep and the metric's value)")
    p.add_argument("--json", action="store_true")
