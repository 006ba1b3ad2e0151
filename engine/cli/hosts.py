"""Hosts: their state and load, taking one out of use or checking it, and utilisation over
time."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import TYPE_CHECKING

from engine.cli.output import EXIT_REFUSED, EXIT_USAGE, duration_arg, print_json, table
from engine.model import format_duration, sparkline

if TYPE_CHECKING:
    from engine.client import Client


async def cmd_hosts(engine: Client, args: argparse.Namespace) -> int:
    hosts = (await engine.hosts()).hosts
    if args.json:
        print_json(hosts)
        return 0
    rows = []
    for h in hosts:
        s = h.sample
        if s is not None and s.cluster is not None:
            c = s.cluster
            rows.append(
                (
                    h.name,
                    h.kind,
                    h.state,
                    f"{h.active}/{h.max_jobs}",
                    f"{c.cpus_used}/{c.cpus_total}",
                    "-",
                    f"{c.gpus_used}/{c.gpus_total} in use",
                    f"nodes {c.nodes()}; ours {c.ours()}" + (f"; {c.error}" if c.error else ""),
                )
            )
            continue
        cpu = f"{s.cpu_percent:.0f}%" if s else "-"
        mem = f"{s.mem_used_mb / 1024:.1f}/{s.mem_total_mb / 1024:.1f} GiB" if s else "-"
        gpus = "; ".join(
            f"{g.index}: {g.reserved_mb / 1024:.0f}G held"
            + (f" by {','.join(map(str, g.runs))}" if g.runs else "")
            + f", {g.free_mb / 1024:.0f}/{g.total_mb / 1024:.0f}G free"
            for g in h.gpus
        ) or (s.gpu_error if s and s.gpu_error else "-")
        state = h.state
        if h.state == "unreachable" and h.since:
            state = f"unreachable for {format_duration(time.time() - h.since)}"
        rows.append(
            (h.name, h.kind, state, f"{h.active}/{h.max_jobs}", cpu, mem, gpus, h.reason or "")
        )
    print(table(rows, ("HOST", "KIND", "STATE", "RUNS", "CPU", "MEMORY", "GPUS", "REASON")))
    return 0


async def cmd_host(engine: Client, args: argparse.Namespace) -> int:
    if args.action == "check":
        steps = await engine.check_host(args.name)
        if args.json:
            print_json([{"step": step, "ok": ok, "detail": detail} for step, ok, detail in steps])
        else:
            for step, ok, detail in steps:
                print(f"{'ok  ' if ok else 'FAIL'}  {step:<8} {detail}")
        return 0 if all(ok for _, ok, _ in steps) else EXIT_REFUSED
    result = await engine.set_host(args.name, args.action == "enable", args.reason)
    if args.json:
        print_json(result)
    print(f"host {result['host']}: {result['state']}", file=sys.stderr)
    return 0


async def cmd_util(engine: Client, args: argparse.Namespace) -> int:
    try:
        since = duration_arg(args.since)
    except argparse.ArgumentTypeError as exc:
        print(f"engine util: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = await engine.util(since, args.buckets)
    if args.json:
        print_json(rows)
        return 0
    lines = []
    for r in rows:
        what = r["what"] if r["gpu"] is None else f"gpu{r['gpu']} {r['what'].removeprefix('gpu ')}"
        scale = 100.0 if "%" in r["what"] else (r.get("of") or max(r["peak"], 1e-9))
        spark = sparkline(r["buckets"], scale)
        lines.append(
            (r["host"], what, f"{r['mean']:.1f}", f"{r['peak']:.1f}", spark, str(r["samples"]))
        )
    print(table(lines, ("HOST", "WHAT", "MEAN", "PEAK", f"OVER {args.since}", "SAMPLES")))
    return 0


async def cmd_notify(engine: Client, args: argparse.Namespace) -> int:
    """`engine notify test`: the notifier gets a sample event, as it would a real one."""
    outcome = await engine.notify_test()
    if args.json:
        print_json(outcome)
    elif not outcome["command"]:
        print(f"engine notify: {outcome['error']}", file=sys.stderr)
    elif outcome["sent"]:
        print(
            f"sent a test event to {shlex.join(outcome['command'])} ({outcome['elapsed_s']:.2f}s)"
        )
    else:
        print(f"engine notify: {outcome['error']}", file=sys.stderr)
    return 0 if outcome["sent"] else EXIT_REFUSED


COMMANDS = {"hosts": cmd_hosts, "host": cmd_host, "util": cmd_util, "notify": cmd_notify}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs of hosts."""
    p = sub.add_parser(
        "host", help="take a host out of use or back into use, or check it step by step"
    )
    p.add_argument("action", choices=["enable", "disable", "check"])
    p.add_argument("name")
    p.add_argument("--reason", help="why (shown with the host's state)")
    p.add_argument(
        "--json",
        action="store_true",
        help='check: [{"step", "ok", "detail"}]; enable/disable: {"host", "state", "reason"}',
    )
    p = sub.add_parser("util", help="each host's and GPU's utilisation over time")
    p.add_argument("--since", default="1h", help="how far back: 90s, 15m, 1h, 2d (default 1h)")
    p.add_argument(
        "--buckets", type=int, default=24, help="time slices in the sparkline (default 24)"
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("hosts", help="each host's state and load")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("notify", help="send the [engine] notify command a sample event")
    p.add_argument("action", choices=["test"])
    p.add_argument("--json", action="store_true")
