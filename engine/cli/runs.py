"""One run at a time: start it, list runs, show one, its output and metrics, cancel, retry
and reproduce it."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import TYPE_CHECKING

import msgspec

from engine.cli.output import EXIT_REFUSED, EXIT_USAGE, ago, duration_arg, print_json, table
from engine.core import template
from engine.core.capture import PRESET_HELP
from engine.model import (
    FAILURE_CLASSES,
    DataLink,
    JobSpec,
    Resources,
    RetryPolicy,
    Run,
    RunStatus,
    WatchPolicy,
    format_duration,
    format_value,
)

if TYPE_CHECKING:
    from engine.client import Client


async def cmd_run(engine: Client, args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(
            "engine run: give the command after `--`, e.g. engine run -- python train.py",
            file=sys.stderr,
        )
        return EXIT_USAGE
    defaults = RetryPolicy()
    retry = RetryPolicy(
        attempts=args.attempts if args.attempts is not None else defaults.attempts,
        backoff_s=args.backoff if args.backoff is not None else defaults.backoff_s,
        on=tuple(args.retry_on) if args.retry_on else defaults.on,
    )
    job = JobSpec(
        argv=tuple(argv),
        cwd=os.getcwd(),
        name=args.name,
        seed=args.seed,
        capture=tuple(args.capture or ()),
        env=dict(os.environ),
        host=args.host,
        resources=Resources(
            cpus=args.cpus, mem_gb=args.mem, gpus=args.gpus, gpu_mem_gb=args.gpu_mem
        ),
        priority=args.priority,
        model_type=args.model_type,
        tags=tuple(args.tag or ()),
        requires=tuple(args.requires or ()),
        sweep=args.sweep,
        max_concurrent=args.max_concurrent,
        retry=retry,
        data=tuple(DataLink(place="", source=os.path.abspath(d)) for d in args.data or ()),
        snapshot=args.snapshot,
        wait_for_host=args.wait_for_host,
        watch=WatchPolicy(
            metrics=tuple(args.watch or ()), on_nan=args.on_nan, stall_after_s=args.stall_after
        ),
    )
    [run] = await engine.submit([job])
    print(f"run {run.id} ({run.name}) queued: {shlex.join(run.argv)}", file=sys.stderr)
    if not args.wait:
        if args.json:
            print_json(run)
        else:
            print(run.id)
        return 0
    return await _wait_and_tell(engine, run, args.json)


async def _wait_and_tell(engine: Client, run: Run, as_json: bool) -> int:
    """Wait for a run (its progress on a terminal), print it, and exit with its exit code."""
    from engine.cli.progress import wait_for_run

    run = await wait_for_run(engine, run)
    if as_json:
        print_json(run)
    else:
        print(run.id)
    print(f"run {run.id} {run.status}: {run.reason}", file=sys.stderr)
    if run.exit_code is not None:
        return min(run.exit_code, 255)
    return 0 if run.status is RunStatus.SUCCEEDED else EXIT_REFUSED


async def cmd_runs(engine: Client, args: argparse.Namespace) -> int:
    runs = await engine.runs(args.status or (), args.limit, getattr(args, "sweep", None))
    if args.json:
        print_json(runs)
        return 0
    rows = [
        (
            str(r.id),
            r.name[:28],
            str(r.status),
            r.host or "-",
            "-" if r.exit_code is None else str(r.exit_code),
            format_duration(r.elapsed()),
            ago(r.created_at),
            (f"⚑ {r.flag}" if r.flag else r.reason or "")[:60],
        )
        for r in runs
    ]
    print(table(rows, ("ID", "NAME", "STATUS", "HOST", "EXIT", "TIME", "SUBMITTED", "REASON")))
    return 0


async def cmd_show(engine: Client, args: argparse.Namespace) -> int:
    detail = await engine.run(args.run)
    if args.json:
        print_json(detail)
        return 0
    run, d = detail.run, detail.details
    manifest = d.get("manifest") or {}
    git = manifest.get("git") or {}
    interp = manifest.get("interpreter") or {}
    out = [
        f"run {run.id}  {run.name}",
        f"  status     {run.status}" + (f" ({run.failure_class})" if run.failure_class else ""),
        f"  reason     {run.reason or '-'}",
        *([f"  flag       {run.flag}"] if run.flag else []),
        *([f"  aliases    {' '.join('@' + a for a in d['aliases'])}"] if d.get("aliases") else []),
        f"  command    {shlex.join(template.shown(run.argv, run.templated))}",
        f"  cwd        {run.cwd}",
        f"  host       {run.host or '-'}   attempt {run.attempt}   pid {run.pid or '-'}",
        f"  seed       {run.seed}",
        f"  exit code  {'-' if run.exit_code is None else run.exit_code}",
        f"  duration   {format_duration(run.elapsed())}",
        f"  run dir    {run.run_dir or '-'}",
    ]
    if git:
        dirty = " (dirty, diff: " + (git.get("diff_file") or "-") + ")" if git.get("dirty") else ""
        out.append(
            f"  git        {git.get('commit') or '(no commit)'} on {git.get('branch') or '-'}{dirty}"
        )
        if git.get("untracked"):
            out.append(f"  untracked  {len(git['untracked'])} files")
    if manifest.get("snapshot"):
        out.append(f"  snapshot   {manifest['snapshot']} (the code this run ran from)")
    if run.sweep:
        out.append(f"  sweep      {run.sweep}  params {json.dumps(run.params)}")
    if interp:
        out.append(
            f"  python     {interp.get('version')} {interp.get('path')} ({interp.get('package_count')} packages)"
        )
    if d["metrics"]:
        out.append("  metrics")
        for m in d["metrics"]:
            out.append(
                f"    {m['key']:<20} n={m['count']:<8} last={format_value(m['last'], 6)}"
                f"  min={format_value(m['min'], 6)}  max={format_value(m['max'], 6)}"
            )
    if run.parent is not None:
        out.append(
            f"  evaluates  run {run.parent} ({run.split}): its metrics show there as {run.split}/KEY"
        )
    if d.get("evaluations"):
        out.append("  evaluations")
        for e in d["evaluations"]:
            out.append(f"    {e['id']:<6} {e['name']}  {e['status']}  ({e['split']})")
    if run.gpus:
        out.append(f"  gpus       {','.join(map(str, run.gpus))} (CUDA_VISIBLE_DEVICES)")
    if d["attempts"]:
        out.append("  attempts")
        for a in d["attempts"]:
            on = a["host"] + (f" GPU {','.join(map(str, a['gpus']))}" if a["gpus"] else "")
            if a.get("batch_job"):
                on += f" (Slurm job {a['batch_job']}" + (f" on {a['node']})" if a["node"] else ")")
            cls = f" [{a['failure_class']}]" if a.get("failure_class") else ""
            out.append(f"    #{a['attempt']} on {on}: {a['status']}{cls}  {a['reason'] or ''}")
    if d["bad_markers"]:
        out.append(f"  malformed @runyard lines: {d['bad_markers']} (kept in the log)")
    out.append("  events")
    for e in d["events"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        out.append(f"    {stamp}  {e['from'] or '':<10} → {e['to']:<10} {e['reason'] or ''}")
    print("\n".join(out))
    return 0


async def cmd_logs(engine: Client, args: argparse.Namespace) -> int:
    import asyncio

    offset = 0
    out = sys.stdout.buffer
    kept = bytearray()  # --json without -f: all of it in one object at the end

    def write(data: bytes, start: int, end: int, ended: bool) -> None:
        if args.json:  # with -f, one object per read: JSON Lines
            chunk = {"run": args.run, "start": start, "end": end, "ended": ended}
            text = data.decode("utf-8", "replace")
            out.write(msgspec.json.encode(chunk | {"text": text}) + b"\n")
        else:
            out.write(data)
        out.flush()

    while True:
        start = offset
        data, offset, ended = await engine.log(args.run, offset, attempt=args.attempt)
        if data:
            if args.json and not args.follow:
                kept += data
            else:
                write(data, start, offset, False)
            continue
        if not args.follow or ended:
            # One more read: output written between the last read and the end.
            start = offset
            data, offset, ended = await engine.log(args.run, offset, attempt=args.attempt)
            if args.json and not args.follow:
                write(bytes(kept + data), 0, offset, ended)
            elif data or args.json:
                write(data, start, offset, ended)
            return 0
        await asyncio.sleep(0.2)


async def cmd_metrics(engine: Client, args: argparse.Namespace) -> int:
    points = await engine.metrics(args.run, args.key, attempt=args.attempt)
    if args.json:
        print_json(points)
        return 0
    rows = [
        (
            p["key"],
            "-" if p["step"] is None else str(p["step"]),
            f"{p['value']:.6g}",
            str(p["line"]),
        )
        for p in points
    ]
    print(table(rows, ("KEY", "STEP", "VALUE", "LINE")))
    return 0


async def cmd_cancel(engine: Client, args: argparse.Namespace) -> int:
    if (args.run is None) == (args.sweep is None):
        print("engine cancel: give a RUN or --sweep S", file=sys.stderr)
        return EXIT_USAGE
    runs = await engine.cancel_sweep(args.sweep) if args.sweep else [await engine.cancel(args.run)]
    if args.json:
        print_json(runs)
    for run in runs:
        print(f"run {run.id}: cancel requested", file=sys.stderr)
    return 0


async def cmd_retry(engine: Client, args: argparse.Namespace) -> int:
    run = await engine.retry(args.run)
    if args.json:
        print_json(run)
    print(f"run {run.id}: queued again as attempt {run.attempt + 1}", file=sys.stderr)
    return 0


async def cmd_reproduce(engine: Client, args: argparse.Namespace) -> int:
    run = await engine.reproduce(args.run)
    print(f"run {run.id} ({run.name}) queued, reproducing run {args.run}", file=sys.stderr)
    if args.wait:
        return await _wait_and_tell(engine, run, args.json)
    if args.json:
        print_json(run)
    else:
        print(run.id)
    return 0


COMMANDS = {
    "run": cmd_run,
    "runs": cmd_runs,
    "show": cmd_show,
    "logs": cmd_logs,
    "metrics": cmd_metrics,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "reproduce": cmd_reproduce,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs of single runs."""
    p = sub.add_parser("run", help="run a command: engine run [options] -- CMD ARGS…")
    p.add_argument("--name", help="a name for the run (default: from the command)")
    p.add_argument("--seed", type=int, help="the run's seed (default: a random one, recorded)")
    presets = "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())
    p.add_argument(
        "--capture",
        action="append",
        metavar="P",
        help=f"read metrics from plain output too: a preset ({presets}) or a regex with named groups; repeatable",
    )
    p.add_argument("--host", help="run on this host")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the run needs (default 0)")
    p.add_argument(
        "--gpu-mem",
        type=float,
        default=0.0,
        metavar="GB",
        help="GPU memory per GPU; without it each GPU is the run's alone",
    )
    p.add_argument("--cpus", type=float, default=0.0, help="CPUs to reserve (default: none)")
    p.add_argument(
        "--mem", type=float, default=0.0, metavar="GB", help="memory to reserve (default: none)"
    )
    p.add_argument("--priority", type=int, default=0, help="higher starts first (default 0)")
    p.add_argument("--model-type", help="for [[routes]] match")
    p.add_argument("--tag", action="append", help="a tag for [[routes]] match; repeatable")
    p.add_argument(
        "--requires", action="append", metavar="TAG", help="a tag the host must have; repeatable"
    )
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="run from a snapshot of the project's code, in a work directory of its own",
    )
    p.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="data git ignores, linked at the same place in the run's directory (implies --snapshot); repeatable",
    )
    p.add_argument(
        "--wait-for-host",
        action="store_true",
        help="queue it even where no host could ever run it (it waits, saying why)",
    )
    p.add_argument("--sweep", help="the sweep this run belongs to")
    p.add_argument("--max-concurrent", type=int, help="at most this many runs of the sweep at once")
    p.add_argument("--attempts", type=int, help="attempts at most, retries included (default 3)")
    p.add_argument(
        "--retry-on",
        action="append",
        choices=FAILURE_CLASSES,
        help="failure classes to retry (default: oom, host_lost); repeatable",
    )
    p.add_argument(
        "--backoff",
        type=float,
        metavar="S",
        help="seconds before the first retry, doubling after (default 10)",
    )
    p.add_argument(
        "--watch",
        action="append",
        metavar="KEY",
        help="a metric the watchdog flags when it becomes NaN or infinite (default: every one); repeatable",
    )
    p.add_argument(
        "--on-nan",
        choices=["flag", "stop"],
        default="flag",
        help="flag the run (default), or stop it as diverged",
    )
    p.add_argument(
        "--stall-after",
        type=duration_arg,
        metavar="DURATION",
        help="flag the run when it prints nothing this long, e.g. 30m (default: the host's stall_after_s)",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the run and exit with its exit code"
    )
    p.add_argument(
        "--json", action="store_true", help="print the queued run (with --wait: the finished one)"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in RunStatus],
        help="only runs with this status; repeatable",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--sweep", help="only the runs of this sweep")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("show", help="a run's details, manifest, attempts and events")
    p.add_argument("run", help="run id, name or @alias")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", help="cancel a run, or every unfinished run of a sweep")
    p.add_argument("run", nargs="?", help="run id, name or @alias")
    p.add_argument("--sweep", help="cancel the whole sweep")
    p.add_argument("--json", action="store_true", help="print the runs asked to stop")
    p = sub.add_parser("retry", help="queue a failed or lost run again, as its next attempt")
    p.add_argument("run", help="run id, name or @alias")
    p.add_argument("--json", action="store_true", help="print the run queued again")
    p = sub.add_parser("logs", help="a run's output")
    p.add_argument("run", help="run id, name or @alias")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p.add_argument("--attempt", type=int, help="which attempt (default: the latest)")
    p.add_argument(
        "--json",
        action="store_true",
        help='{"run", "start", "end", "ended", "text"} per read (JSON Lines with -f)',
    )

    p = sub.add_parser("metrics", help="a run's metric points (of its final attempt)")
    p.add_argument("run", help="run id, name or @alias")
    p.add_argument("--key", help="only this metric")
    p.add_argument("--attempt", type=int, help="which attempt (default: the final one)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("reproduce", help="queue a run again: same snapshot, command, params, seed")
    p.add_argument("run", help="run id, name or @alias")
    p.add_argument(
        "--wait", action="store_true", help="wait for the new run and exit with its exit code"
    )
    p.add_argument("--json", action="store_true", help="print the new run")
