"""The headless CLI: parses arguments, calls the daemon through `engine.client`, prints.

stdout carries data (tables, or stable JSON with --json); stderr carries diagnostics.
Exit codes: 0 done; 1 the daemon refused or a waited run failed without an exit code;
2 bad usage or configuration; 3 no such run; `run --wait` exits with the run's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine import report, template
from engine.capture import PRESET_HELP
from engine.client import Client, EngineError, connect, probe
from engine.config import CONFIG_NAME, ConfigError, find_config, load_config, load_experiment
from engine.daemon import DaemonError, lock_holder, pid_alive, run_daemon, socket_path
from engine.model import (
    DataLink,
    FailureClass,
    JobSpec,
    Resources,
    RetryPolicy,
    Run,
    RunStatus,
    format_duration,
)

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
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


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def _ago(t: float | None) -> str:
    return "-" if t is None else format_duration(time.time() - t) + " ago"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


# --- commands --------------------------------------------------------------------------------


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
    )
    [run] = await engine.submit([job])
    print(f"run {run.id} ({run.name}) queued: {shlex.join(run.argv)}", file=sys.stderr)
    if not args.wait:
        print(run.id)
        return 0
    run = await engine.wait(run.id)
    if args.json:
        _print_json(run)
    else:
        print(run.id)
    print(f"run {run.id} {run.status}: {run.reason}", file=sys.stderr)
    if run.exit_code is not None:
        return min(run.exit_code, 255)
    return 0 if run.status is RunStatus.SUCCEEDED else EXIT_REFUSED


async def cmd_runs(engine: Client, args: argparse.Namespace) -> int:
    runs = await engine.runs(args.status or (), args.limit, getattr(args, "sweep", None))
    if args.json:
        _print_json(runs)
        return 0
    rows = [
        (
            str(r.id),
            r.name[:28],
            str(r.status),
            r.host or "-",
            "-" if r.exit_code is None else str(r.exit_code),
            format_duration(r.elapsed()),
            _ago(r.created_at),
            (r.reason or "")[:60],
        )
        for r in runs
    ]
    print(_table(rows, ("ID", "NAME", "STATUS", "HOST", "EXIT", "TIME", "SUBMITTED", "REASON")))
    return 0


async def cmd_show(engine: Client, args: argparse.Namespace) -> int:
    detail = await engine.run(args.run)
    if args.json:
        _print_json(detail)
        return 0
    run, d = detail.run, detail.details
    manifest = d.get("manifest") or {}
    git = manifest.get("git") or {}
    interp = manifest.get("interpreter") or {}
    out = [
        f"run {run.id}  {run.name}",
        f"  status     {run.status}" + (f" ({run.failure_class})" if run.failure_class else ""),
        f"  reason     {run.reason or '-'}",
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
                f"    {m['key']:<20} n={m['count']:<8} last={m['last']:.6g}  min={m['min']:.6g}  max={m['max']:.6g}"
            )
    if run.gpus:
        out.append(f"  gpus       {','.join(map(str, run.gpus))} (CUDA_VISIBLE_DEVICES)")
    if d["attempts"]:
        out.append("  attempts")
        for a in d["attempts"]:
            on = a["host"] + (f" GPU {','.join(map(str, a['gpus']))}" if a["gpus"] else "")
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
    offset = 0
    out = sys.stdout.buffer
    while True:
        data, offset, ended = await engine.log(args.run, offset, attempt=args.attempt)
        if data:
            out.write(data)
            out.flush()
            continue
        if not args.follow or ended:
            # One more read: output written between the last read and the end.
            data, offset, _ = await engine.log(args.run, offset, attempt=args.attempt)
            out.write(data)
            out.flush()
            return 0
        await asyncio.sleep(0.2)


async def cmd_metrics(engine: Client, args: argparse.Namespace) -> int:
    points = await engine.metrics(args.run, args.key, attempt=args.attempt)
    if args.json:
        _print_json(points)
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
    print(_table(rows, ("KEY", "STEP", "VALUE", "LINE")))
    return 0


async def cmd_cancel(engine: Client, args: argparse.Namespace) -> int:
    if (args.run is None) == (args.sweep is None):
        print("engine cancel: give a RUN or --sweep S", file=sys.stderr)
        return EXIT_USAGE
    runs = await engine.cancel_sweep(args.sweep) if args.sweep else [await engine.cancel(args.run)]
    for run in runs:
        print(f"run {run.id}: cancel requested", file=sys.stderr)
    return 0


async def cmd_retry(engine: Client, args: argparse.Namespace) -> int:
    run = await engine.retry(args.run)
    print(f"run {run.id}: queued again as attempt {run.attempt + 1}", file=sys.stderr)
    return 0


async def cmd_sweep(engine: Client, args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"engine sweep: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        overrides[key.strip()] = value.strip()
    load_experiment(args.file, overrides)  # a bad file is a usage error (exit 2)
    result = await engine.sweep(args.file, overrides, dry_run=args.dry_run)
    if args.json:
        _print_json(result)
    what = "would run" if args.dry_run else f"sweep {result.sweep} queued"
    print(f"{what}: {result.trials} trials: {result.where}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        if not args.json:
            for job in result.first:
                print(f"{job.name}  {shlex.join(template.shown(job.argv, job.templated))}")
            if result.trials > len(result.first):
                print(f"… and {result.trials - len(result.first)} more")
            for line in result.sees:
                print(line)
        return 0
    if not args.json:
        print(result.sweep)
    if not args.wait:
        return 0
    assert result.sweep is not None
    done = await engine.wait_sweep(result.sweep)
    print(
        f"sweep {result.sweep}: "
        + ", ".join(f"{n} {status}" for status, n in sorted(done.counts.items())),
        file=sys.stderr,
    )
    bad = sum(n for status, n in done.counts.items() if status not in ("succeeded", "pruned"))
    return 0 if not bad else EXIT_REFUSED


async def cmd_sweeps(engine: Client, args: argparse.Namespace) -> int:
    sweeps = await engine.sweeps()
    if args.json:
        _print_json(sweeps)
        return 0
    rows = [
        (
            s.id,
            s.method,
            str(s.trials),
            " ".join(f"{k}={v}" for k, v in sorted(s.counts.items())),
            s.snapshot or "-",
            _ago(s.created_at),
        )
        for s in sweeps
    ]
    print(_table(rows, ("SWEEP", "METHOD", "TRIALS", "RUNS", "SNAPSHOT", "CREATED")))
    return 0


async def cmd_best(engine: Client, args: argparse.Namespace) -> int:
    result = await engine.best(args.sweep, args.by, args.mode)
    if args.json:
        _print_json(result)
        return 0
    configs = result["configs"]
    if not configs:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(result.get("counts", {}).items()))
        succeeded = result.get("counts", {}).get("succeeded", 0)
        why = (
            f"no succeeded run reported {result['metric']}"
            if succeeded
            else "no run succeeded" + (f" ({counts})" if counts else "")
        )
        print(f"sweep {args.sweep}: {why}", file=sys.stderr)
        return EXIT_REFUSED
    top = configs[0]
    ci = ""
    if top.get("ci95"):
        clipped = f", cut at the bound {result['bounds']}" if top.get("ci95_clipped") else ""
        ci = f", 95% CI [{top['ci95'][0]:.6g}, {top['ci95'][1]:.6g}{clipped}]"
    value = "each run's last value" if result["summary"] == "last" else "each run's best value"
    print(
        f"best of {len(configs)} configs by {result['metric']} ({result['mode']}, {value}): "
        f"{top['mean']:.6g} ± {top['std']:.3g} over {top['n']} seeds{ci}; best run {top['best_run']}"
    )
    print((f"{top['model_type']} " if top.get("model_type") else "") + json.dumps(top["params"]))
    test = result.get("best_vs_runner_up")
    if test:
        second = configs[1]
        verdict = "better" if test["p"] < 0.05 else "not clearly better"
        print(
            f"vs runner-up {second['mean']:.6g} ± {second['std']:.3g}: Welch t = {test['t']:.3g},"
            f" df = {test['df']:.3g}, one-sided p = {test['p']:.3g} ({verdict} at 5%)"
        )
    return 0


async def cmd_compare(engine: Client, args: argparse.Namespace) -> int:
    refs = list(args.runs)
    if args.sweep:
        refs += [r.id for r in reversed(await engine.runs(sweep=args.sweep, limit=None))]
    if len(refs) < 2:
        print("engine compare: give two or more runs, or --sweep S", file=sys.stderr)
        return EXIT_USAGE
    found = [await engine.run(ref) for ref in refs]
    result = report.compare([d.run for d in found], [d.details for d in found])
    if args.json:
        _print_json(result)
        return 0
    header = ["", *(f"{r['id']} {r['name']}"[:24] for r in result["runs"])]
    rows = []
    for p in result["params"]:
        if p["differs"] or args.all:
            mark = "≠ " if p["differs"] else "  "
            rows.append([mark + p["name"], *(_cell(v) for v in p["values"])])
    for m in result["metrics"]:
        cells = [
            f"{_cell(v['last'])} [{_cell(v['min'])}, {_cell(v['max'])}]" if v else "-"
            for v in m["runs"]
        ]
        rows.append([f"  {m['key']} last [min, max]", *cells])
    rows.append(["  duration", *(format_duration(r["duration_s"]) for r in result["runs"])])
    rows.append(["  host", *(r["host"] or "-" for r in result["runs"])])
    rows.append(["  status", *(r["status"] for r in result["runs"])])
    print(_table(rows, header))
    return 0


async def cmd_report(engine: Client, args: argparse.Namespace) -> int:
    made = await engine.report(args.sweep, args.out)
    print(
        f"wrote {len(made['files'])} files to {args.out}: {', '.join(made['files'])}",
        file=sys.stderr,
    )
    print(Path(made["out"]) / "index.md")
    return 0


async def cmd_export(engine: Client, args: argparse.Namespace) -> int:
    result = await engine.best(args.sweep, args.by, args.mode, runs=args.runs)
    configs, metric = result["configs"], result["metric"]
    if not configs:
        print(f"sweep {args.sweep}: no succeeded run reported {metric}", file=sys.stderr)
        return EXIT_REFUSED
    summary = result["summary"]
    rows = (
        report.run_rows(configs, metric, summary)
        if args.runs
        else report.config_rows(configs, metric, summary)
    )
    if args.format == "parquet":
        if not args.out:
            print("engine export: parquet needs --out FILE", file=sys.stderr)
            return EXIT_USAGE
        report.to_parquet(rows, Path(args.out))
    else:
        text = (
            report.to_csv(rows)
            if args.format == "csv"
            else report.to_latex(
                configs,
                metric,
                result["mode"],
                f"{args.sweep}: {metric} ({summary} value of each run)",
            )
        )
        if args.out:
            Path(args.out).write_text(text)
        else:
            sys.stdout.write(text)
    if args.out:
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0


async def cmd_sql(engine: Client, args: argparse.Namespace) -> int:
    result = await engine.sql(args.query)
    columns, rows = result["columns"], result["rows"]
    if args.json:
        _print_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif args.csv:
        sys.stdout.write(report.to_csv([dict(zip(columns, r, strict=True)) for r in rows]))
    else:
        print(_table([[_cell(v) for v in r] for r in rows], columns))
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


async def cmd_reproduce(engine: Client, args: argparse.Namespace) -> int:
    run = await engine.reproduce(args.run)
    print(f"run {run.id} ({run.name}) queued, reproducing run {args.run}", file=sys.stderr)
    print(run.id)
    return 0


async def cmd_sweep_status(engine: Client, args: argparse.Namespace) -> int:
    sweep = await engine.sweep_status(args.sweep)
    if args.json:
        _print_json({"sweep": sweep, "runs": await engine.runs(sweep=sweep.id, limit=None)})
        return 0
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.counts.items()))
    print(
        f"sweep {sweep.id}: {sweep.trials} trials ({sweep.method}) from {sweep.file}",
        file=sys.stderr,
    )
    print(f"  {counts}; snapshot {sweep.snapshot}", file=sys.stderr)
    args.status, args.limit = None, None
    return await cmd_runs(engine, args)


async def cmd_queue(engine: Client, args: argparse.Namespace) -> int:
    entries = (await engine.queue()).entries
    if args.json:
        _print_json(entries)
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
    print(_table(rows, ("ID", "NAME", "PRIO", "ASKS", "SWEEP", "WHERE / WHY IT WAITS")))
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
        _print_json({str(e.run.id): e.reason for e in entries})
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
    print(f"run {run.id}: priority {run.priority}", file=sys.stderr)
    return 0


async def cmd_hold(engine: Client, args: argparse.Namespace) -> int:
    run = await (engine.hold(args.run) if args.cmd == "hold" else engine.release(args.run))
    print(f"run {run.id}: {'held' if run.held else 'released'}", file=sys.stderr)
    return 0


async def cmd_host(engine: Client, args: argparse.Namespace) -> int:
    if args.action == "check":
        steps = await engine.check_host(args.name)
        for step, ok, detail in steps:
            print(f"{'ok  ' if ok else 'FAIL'}  {step:<8} {detail}")
        return 0 if all(ok for _, ok, _ in steps) else EXIT_REFUSED
    result = await engine.set_host(args.name, args.action == "enable", args.reason)
    print(f"host {result['host']}: {result['state']}", file=sys.stderr)
    return 0


async def cmd_util(engine: Client, args: argparse.Namespace) -> int:
    try:
        since = _seconds(args.since)
    except argparse.ArgumentTypeError as exc:
        print(f"engine util: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = await engine.util(since, args.buckets)
    if args.json:
        _print_json(rows)
        return 0
    table = []
    for r in rows:
        what = r["what"] if r["gpu"] is None else f"gpu{r['gpu']} {r['what'].removeprefix('gpu ')}"
        scale = 100.0 if "%" in r["what"] else (r.get("of") or max(r["peak"], 1e-9))
        spark = "".join(
            " " if v is None else SPARK[min(7, int(v / scale * 8))] for v in r["buckets"]
        )
        table.append(
            (r["host"], what, f"{r['mean']:.1f}", f"{r['peak']:.1f}", spark, str(r["samples"]))
        )
    print(_table(table, ("HOST", "WHAT", "MEAN", "PEAK", f"OVER {args.since}", "SAMPLES")))
    return 0


SPARK = "▁▂▃▄▅▆▇█"


def _seconds(text: str) -> float:
    """'90', '90s', '15m', '1h', '2d' as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h)") from None


async def cmd_hosts(engine: Client, args: argparse.Namespace) -> int:
    hosts = (await engine.hosts()).hosts
    if args.json:
        _print_json(hosts)
        return 0
    rows = []
    for h in hosts:
        s = h.sample
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
    print(_table(rows, ("HOST", "KIND", "STATE", "RUNS", "CPU", "MEMORY", "GPUS", "REASON")))
    return 0


# --- parsing ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Runyard's headless engine: run, watch and record training jobs.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"the {CONFIG_NAME} to use (default: $RUNYARD_CONFIG, else the nearest {CONFIG_NAME})",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("serve", help="run the daemon in the foreground")
    sub.add_parser("stop", help="stop the daemon (runs keep going)")
    sub.add_parser("init", help=f"write a starter {CONFIG_NAME} and experiments/ here")
    p = sub.add_parser(
        "validate", help=f"check {CONFIG_NAME} and experiment files without running anything"
    )
    p.add_argument("files", nargs="*", metavar="EXPERIMENT", help="experiment files to check")

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
    p.add_argument("--sweep", help="the sweep this run belongs to")
    p.add_argument("--max-concurrent", type=int, help="at most this many runs of the sweep at once")
    p.add_argument("--attempts", type=int, help="attempts at most, retries included (default 3)")
    p.add_argument(
        "--retry-on",
        action="append",
        choices=[c.value for c in FailureClass],
        help="failure classes to retry (default: oom, host_lost); repeatable",
    )
    p.add_argument(
        "--backoff",
        type=float,
        metavar="S",
        help="seconds before the first retry, doubling after (default 10)",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the run and exit with its exit code"
    )
    p.add_argument(
        "--json", action="store_true", help="with --wait: print the finished run as JSON"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")

    p = sub.add_parser("sweep", help="launch (or --dry-run) a sweep of an experiment file")
    p.add_argument("file", help="an experiment file, e.g. experiments/xgb_digits.toml")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="fix a parameter (a value or [list]) or set trials, seeds, max_concurrent, method; repeatable",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the trial count, the first trials and where they would run",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for every trial; exit 1 unless all succeed"
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("sweeps", help="sweeps, newest first, with their runs by status")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("sweep-status", help="a sweep's runs and how far it has got")
    p.add_argument("sweep")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("best", help="a sweep's best configuration: mean and spread over seeds")
    p.add_argument("sweep")
    p.add_argument("--by", metavar="KEY", help="the metric (default: the experiment's)")
    p.add_argument("--mode", choices=["min", "max"], help="(default: the experiment's)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("reproduce", help="queue a run again: same snapshot, command, params, seed")
    p.add_argument("run", help="run id or name")

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
    p.add_argument("run", help="run id or name")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", help="cancel a run, or every unfinished run of a sweep")
    p.add_argument("run", nargs="?", help="run id or name")
    p.add_argument("--sweep", help="cancel the whole sweep")

    p = sub.add_parser("compare", help="runs side by side: params that differ, metrics, durations")
    p.add_argument("runs", nargs="*", help="run ids or names")
    p.add_argument("--sweep", help="every run of this sweep")
    p.add_argument("--all", action="store_true", help="show params that do not differ too")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="a sweep's exports and plots, tied together by an index.md")
    p.add_argument("sweep")
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("export", help="a sweep's configurations (or runs) as CSV, Parquet or LaTeX")
    p.add_argument("sweep")
    p.add_argument("--format", choices=["csv", "parquet", "latex"], default="csv")
    p.add_argument("--out", metavar="FILE", help="write here (default: stdout; parquet needs it)")
    p.add_argument("--runs", action="store_true", help="one row per run, not per configuration")
    p.add_argument("--by", metavar="KEY", help="the metric (default: the sweep's)")
    p.add_argument("--mode", choices=["min", "max"])

    p = sub.add_parser("sql", help="read-only SQL over the views runs_v, metrics_v, params_v")
    p.add_argument("query")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", action="store_true")

    p = sub.add_parser("retry", help="queue a failed or lost run again, as its next attempt")
    p.add_argument("run", help="run id or name")

    p = sub.add_parser(
        "queue", help="queued runs in planning order: where each goes, or why it waits"
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("plan", help="explain where queued runs would start now, or why they wait")
    p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (default: all queued)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("priority", help="set a queued run's priority (higher first)")
    p.add_argument("run", help="run id or name")
    p.add_argument("priority", type=int)
    for name, text in (
        ("hold", "keep a queued run from starting"),
        ("release", "let a held run start"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run id or name")
    p = sub.add_parser(
        "host", help="take a host out of use or back into use, or check it step by step"
    )
    p.add_argument("action", choices=["enable", "disable", "check"])
    p.add_argument("name")
    p.add_argument("--reason", help="why (shown with the host's state)")
    p = sub.add_parser("util", help="each host's and GPU's utilisation over time")
    p.add_argument("--since", default="1h", help="how far back: 90s, 15m, 1h, 2d (default 1h)")
    p.add_argument(
        "--buckets", type=int, default=24, help="time slices in the sparkline (default 24)"
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", help="a run's output")
    p.add_argument("run", help="run id or name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p.add_argument("--attempt", type=int, help="which attempt (default: the latest)")

    p = sub.add_parser("metrics", help="a run's metric points (of its final attempt)")
    p.add_argument("run", help="run id or name")
    p.add_argument("--key", help="only this metric")
    p.add_argument("--attempt", type=int, help="which attempt (default: the final one)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("hosts", help="each host's state and load")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": cmd_run,
    "runs": cmd_runs,
    "show": cmd_show,
    "logs": cmd_logs,
    "metrics": cmd_metrics,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "export": cmd_export,
    "compare": cmd_compare,
    "report": cmd_report,
    "sql": cmd_sql,
    "hosts": cmd_hosts,
    "queue": cmd_queue,
    "sweep": cmd_sweep,
    "sweeps": cmd_sweeps,
    "best": cmd_best,
    "sweep-status": cmd_sweep_status,
    "reproduce": cmd_reproduce,
    "plan": cmd_plan,
    "priority": cmd_priority,
    "hold": cmd_hold,
    "release": cmd_hold,
    "host": cmd_host,
    "util": cmd_util,
}


def cmd_validate(config_path: str | None, files: Sequence[str]) -> int:
    """Read hosts.toml and each experiment file as the daemon would, and plan each sweep; the
    first problem of each file is one line on stderr."""
    from engine import sweep

    config = load_config(find_config(config_path))
    print(f"{config.path}: {len(config.hosts)} hosts, {len(config.routes)} routes", file=sys.stderr)
    failed = 0
    for file in files:
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


def cmd_init() -> int:
    target = Path.cwd() / CONFIG_NAME
    if target.exists():
        print(f"engine init: {target} already exists; leaving it as it is", file=sys.stderr)
        return EXIT_USAGE
    target.write_text(STARTER_HOSTS)
    (Path.cwd() / "experiments").mkdir(exist_ok=True)
    ignored = _ignore_in_git(Path.cwd(), "runs/")
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


async def _stop(config_path: str | None) -> int:
    """Ask the daemon to stop and wait until its process has gone; where it does not within
    STOP_WAIT_S, send it SIGTERM, and where even that fails, say so (exit 1)."""
    config = load_config(find_config(config_path))
    sock = socket_path(config.state_dir)
    status = await probe(sock)
    if status is None:
        held = lock_holder(config.state_dir)
        if held is None:
            print(f"engine stop: no daemon serves {config.state_dir}", file=sys.stderr)
            return 0
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
    print(f"engine daemon {pid} stopped; runs keep going", file=sys.stderr)
    return 0


async def _gone(pid: int, within: float) -> bool:
    """Whether process `pid` has exited (or is a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def _with_client(config_path: str | None, args: argparse.Namespace) -> int:
    engine = await connect(config_path)
    try:
        return await COMMANDS[args.cmd](engine, args)
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
    args = build_parser().parse_args(words)
    if getattr(args, "limit", None) is not None and args.limit < 0:
        print("engine runs: --limit must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.cmd == "init":
            return cmd_init()
        if args.cmd == "serve":
            return run_daemon(load_config(find_config(args.config)))
        if args.cmd == "validate":
            return cmd_validate(args.config, args.files)
        if args.cmd == "stop":
            return asyncio.run(_stop(args.config))
        return asyncio.run(_with_client(args.config, args))
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
