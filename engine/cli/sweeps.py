"""Sweeps and their results: launch one, follow it, and read it out as statistics, side-by-side
comparisons, exports, reports and SQL."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.output import (
    EXIT_REFUSED,
    EXIT_USAGE,
    ago,
    cell,
    print_json,
    table,
    terminal_width,
)
from engine.cli.runs import cmd_runs
from engine.core import template
from engine.model import format_duration
from engine.protocol import SmokeReport, SweepPlan

if TYPE_CHECKING:
    from engine.client import Client


async def cmd_sweep(engine: Client, args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"engine sweep: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        overrides[key.strip()] = value.strip()
    from engine.config import load_experiment

    experiment = load_experiment(args.file, overrides)  # a bad file is a usage error (exit 2)
    limit = experiment.confirm_over_s or (engine.config.confirm_over_s if engine.config else None)
    if limit is not None and not args.dry_run and not args.yes:
        plan = await engine.sweep(args.file, overrides, dry_run=True)
        if not confirmed(plan, limit):
            return EXIT_REFUSED
    if args.smoke and not args.dry_run:
        report = await engine.smoke_test(args.file, overrides)
        if args.json and report.full is None:
            print_json(report)
        print_smoke(report)
        if report.full is None:
            print("the full sweep was not queued", file=sys.stderr)
            return EXIT_REFUSED
        result = report.full
    else:
        result = await engine.sweep(
            args.file,
            overrides,
            dry_run=args.dry_run,
            smoke=args.smoke,
            wait_for_host=args.wait_for_host,
        )
    if args.json:
        print_json(result)
    what = "would run" if args.dry_run else f"sweep {result.sweep} queued"
    print(f"{what}: {result.trials} trials: {result.where}", file=sys.stderr)
    if result.shape:
        print(f"  {result.shape}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.uncommitted:
        print(uncommitted_warning(result), file=sys.stderr)
    for estimate in result.estimate:
        print(f"estimate: {estimate.text()}", file=sys.stderr)
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
    from engine.cli.progress import wait_for_sweep

    done = await wait_for_sweep(engine, result.sweep, result.trials)
    print(
        f"sweep {result.sweep}: "
        + ", ".join(f"{n} {status}" for status, n in sorted(done.counts.items())),
        file=sys.stderr,
    )
    bad = sum(n for status, n in done.counts.items() if status not in ("succeeded", "pruned"))
    return 0 if not bad else EXIT_REFUSED


def print_smoke(report: SmokeReport) -> None:
    """A smoke test's runs on stderr, a line each; a failed run's log tail under it."""
    print(f"smoke test {report.sweep}:", file=sys.stderr)
    for judged in report.runs:
        mark = "ok  " if judged.passed else "FAIL"
        print(f"  {mark} {judged.run.name} (run {judged.run.id}) {judged.why}", file=sys.stderr)
        for line in judged.tail.splitlines()[-15:]:
            print(f"       | {line}", file=sys.stderr)


def uncommitted_warning(plan: SweepPlan, shown: int = 8) -> str:
    """The files a sweep's project has not committed, and why that matters."""
    files = ", ".join(line.strip() for line in plan.uncommitted[:shown])
    more = f" and {len(plan.uncommitted) - shown} more" if len(plan.uncommitted) > shown else ""
    commit = f"commit {plan.commit[:10]}" if plan.commit else "a commit"
    return (
        f"warning: uncommitted changes ({files}{more}): the results cannot be reproduced from"
        f" {commit} alone (the sweep's code snapshot and recorded diff keep them)"
    )


def confirmed(plan: SweepPlan, limit: float) -> bool:
    """Whether to launch a sweep whose estimate may pass `confirm_over`: yes under it (or
    without history); past it, the user says so at a terminal, and elsewhere it is refused."""
    longest = max(
        (e for e in plan.estimate if e.wall_s is not None),
        default=None,
        key=lambda e: e.wall_s or 0.0,
    )
    if longest is None or (longest.wall_s or 0.0) <= limit:
        return True
    said = f"estimate: {longest.text()}, over confirm_over = {format_duration(limit)}"
    if not sys.stdin.isatty():
        print(f"engine sweep: {said}; pass --yes to launch it", file=sys.stderr)
        return False
    print(said, file=sys.stderr)
    answer = input("launch it? [y/N] ").strip().lower()
    return answer in ("y", "yes")


async def cmd_sweeps(engine: Client, args: argparse.Namespace) -> int:
    sweeps = await engine.sweeps()
    if args.json:
        print_json(sweeps)
        return 0
    rows = [
        (
            s.id,
            s.method,
            str(s.trials),
            " ".join(f"{k}={v}" for k, v in sorted(s.counts.items())),
            s.snapshot or "-",
            ago(s.created_at),
        )
        for s in sweeps
    ]
    print(table(rows, ("SWEEP", "METHOD", "TRIALS", "RUNS", "SNAPSHOT", "CREATED")))
    return 0


async def cmd_sweep_status(engine: Client, args: argparse.Namespace) -> int:
    sweep = await engine.sweep_status(args.sweep)
    if args.json:
        print_json({"sweep": sweep, "runs": await engine.runs(sweep=sweep.id, limit=None)})
        return 0
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.counts.items()))
    print(
        f"sweep {sweep.id}: {sweep.trials} trials ({sweep.method}) from {sweep.file}",
        file=sys.stderr,
    )
    print(f"  {counts}; snapshot {sweep.snapshot}", file=sys.stderr)
    args.status, args.limit = None, None
    return await cmd_runs(engine, args)


async def cmd_best(engine: Client, args: argparse.Namespace) -> int:
    result = await engine.best(args.sweep, args.by, args.mode)
    if args.json:
        print_json(result)
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
        f"{top['mean']:.6g} ± {top['std']:.3g} over {over(top)}{ci}; best run {top['best_run']}"
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
    if any(c.get("baseline") for c in configs):
        print()
        print(baseline_table(configs))
    return 0


def over(config: dict[str, Any]) -> str:
    """What a configuration's mean is over: "3 seeds", or "6 runs (3 folds x 2 seeds)"."""
    folds = config.get("folds") or 0
    if not folds:
        return f"{config['n']} seeds"
    return f"{config['n']} runs ({folds} folds x {config['n'] // folds} seeds)"


def baseline_table(configs: list[dict[str, Any]]) -> str:
    """Every configuration against the baseline (first): what it changes, mean ± std, the
    mean paired difference with its 95% interval, the paired t-test's and Wilcoxon's p, and
    `*` where the difference is significant at 5%."""
    from engine.results.stats import against_baseline_rows

    base, others = against_baseline_rows(configs, " ")
    rows = [["baseline", f"{base['mean']:.6g} ± {base['std']:.3g}", str(base["n"]), "", "", "", ""]]
    for c, changed in others:
        vs = c["vs_baseline"]
        ci = vs["ci95"]
        rows.append(
            [
                changed,
                f"{c['mean']:.6g} ± {c['std']:.3g}",
                str(vs["n"]),
                "-"
                if vs["delta"] is None
                else f"{vs['delta']:+.4g}" + ("*" if vs["significant"] else ""),
                "-" if ci is None else f"[{ci[0]:+.4g}, {ci[1]:+.4g}]",
                "-" if vs["p"] is None else f"{vs['p']:.3g}",
                "-" if vs["wilcoxon_p"] is None else f"{vs['wilcoxon_p']:.3g}",
            ]
        )
    header = (
        "CONFIG",
        "MEAN ± STD",
        "PAIRS",
        "Δ VS BASELINE",
        "95% CI",
        "P (PAIRED T)",
        "P (WILCOXON)",
    )
    return (
        table(rows, header) + "\n* significant at 5% (paired t-test, two-sided, over matched seeds)"
    )


async def cmd_compare(engine: Client, args: argparse.Namespace) -> int:
    from engine.results.compare import compare

    if args.baseline and "=" in args.baseline:  # a configuration of the sweep
        return await compare_configs(engine, args)
    refs = list(args.runs)
    if args.sweep:
        refs += [r.id for r in reversed(await engine.runs(sweep=args.sweep, limit=None))]
    baseline = await engine.run(args.baseline) if args.baseline else None
    found = [await engine.run(ref) for ref in refs]
    if baseline is not None and all(d.run.id != baseline.run.id for d in found):
        found.insert(0, baseline)
    if len(found) < 2:
        print("engine compare: give two or more runs, or --sweep S", file=sys.stderr)
        return EXIT_USAGE
    result = compare(
        [d.run for d in found],
        [d.details for d in found],
        baseline.run.id if baseline is not None else None,
    )
    if args.json:
        print_json(result)
        return 0
    header = ["", *(f"{r['id']} {r['name']}"[:24] for r in result["runs"])]
    rows = []
    for p in result["params"]:
        if p["differs"] or (args.all and not args.only_diff):
            mark = "≠ " if p["differs"] else "  "
            rows.append([mark + p["name"], *(cell(v) for v in p["values"])])
    for m in result["metrics"]:
        values = [v["last"] if v else None for v in m["runs"]]
        if args.only_diff and len(set(values)) < 2:
            continue
        cells = [
            f"{cell(v['last'])} [{cell(v['min'])}, {cell(v['max'])}]"
            + (f" Δ {v['delta']:+.4g}" if v.get("delta") is not None else "")
            if v
            else "-"
            for v in m["runs"]
        ]
        rows.append([f"  {m['key']} last [min, max]", *cells])
    rows.append(["  duration", *(format_duration(r["duration_s"]) for r in result["runs"])])
    rows.append(["  host", *(r["host"] or "-" for r in result["runs"])])
    rows.append(["  status", *(r["status"] for r in result["runs"])])
    blocks = _runs_per_block(rows, header)
    for start in range(0, len(header) - 1, blocks):
        end = min(start + blocks, len(header) - 1)
        if blocks < len(header) - 1:  # too wide for the terminal: the runs in blocks
            print(f"{'' if start == 0 else chr(10)}runs {start + 1}-{end} of {len(header) - 1}")
        cut = [[row[0], *row[1 + start : 1 + end]] for row in rows]
        print(table(cut, [header[0], *header[1 + start : 1 + end]]))
    return 0


def _runs_per_block(rows: list[list[str]], header: list[str]) -> int:
    """How many runs' columns fit the terminal beside the labels (all of them when piped)."""
    width = terminal_width()
    runs = len(header) - 1
    if width is None:
        return runs
    widths = [max(len(str(row[i])) for row in [header, *rows]) + 2 for i in range(len(header))]
    left = width - widths[0]
    fit = 0
    for w in widths[1:]:
        if left < w:
            break
        left -= w
        fit += 1
    return max(1, fit)


async def compare_configs(engine: Client, args: argparse.Namespace) -> int:
    """Every configuration of a sweep against the one `--baseline KEY=VALUE ...` names."""
    import tomllib

    if not args.sweep:
        print(
            "engine compare: --baseline KEY=VALUE names a configuration of --sweep S",
            file=sys.stderr,
        )
        return EXIT_USAGE
    chosen: dict[str, Any] = {}
    for item in args.baseline.replace(",", " ").split():
        key, _, text = item.partition("=")
        try:
            chosen[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            chosen[key] = text  # a bare word is a string
    result = await engine.best(args.sweep, runs=True, baseline=chosen)
    if args.json:
        print_json(result)
        return 0
    print(
        f"sweep {args.sweep}: {result['metric']} ({result['mode']}), every configuration"
        " against the baseline",
        file=sys.stderr,
    )
    print(baseline_table(result["configs"]))
    return 0


async def cmd_report(engine: Client, args: argparse.Namespace) -> int:
    made = await engine.report(args.sweep, args.out, pdf=args.pdf)
    if args.json:
        print_json(made)
        return 0
    print(
        f"wrote {len(made['files'])} files to {args.out}: {', '.join(made['files'])}",
        file=sys.stderr,
    )
    print(Path(made["out"]) / ("report.pdf" if args.pdf else "index.md"))
    return 0


async def cmd_export(engine: Client, args: argparse.Namespace) -> int:
    from engine.results import export

    result = await engine.best(args.sweep, args.by, args.mode, runs=args.runs)
    configs, metric = result["configs"], result["metric"]
    if not configs:
        print(f"sweep {args.sweep}: no succeeded run reported {metric}", file=sys.stderr)
        return EXIT_REFUSED
    summary = result["summary"]
    rows = (
        export.run_rows(configs, metric, summary)
        if args.runs
        else export.config_rows(configs, metric, summary)
    )
    if args.json and not args.out:
        print_json(rows)
        return 0
    if args.format == "parquet":
        if not args.out:
            print("engine export: parquet needs --out FILE", file=sys.stderr)
            return EXIT_USAGE
        export.to_parquet(rows, Path(args.out))
    else:
        text = (
            export.to_csv(rows)
            if args.format == "csv"
            else export.to_latex(
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
        if args.json:
            print_json({"out": args.out, "format": args.format, "rows": len(rows)})
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0


async def cmd_sql(engine: Client, args: argparse.Namespace) -> int:
    from engine.results import export

    result = await engine.sql(args.query)
    columns, rows = result["columns"], result["rows"]
    if args.json:
        print_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif args.csv:
        sys.stdout.write(export.to_csv([dict(zip(columns, r, strict=True)) for r in rows]))
    else:
        print(table([[cell(v) for v in r] for r in rows], columns))
    return 0


COMMANDS = {
    "sweep": cmd_sweep,
    "sweeps": cmd_sweeps,
    "sweep-status": cmd_sweep_status,
    "best": cmd_best,
    "compare": cmd_compare,
    "report": cmd_report,
    "export": cmd_export,
    "sql": cmd_sql,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs of sweeps and results."""
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
    p.add_argument(
        "--yes", action="store_true", help="launch even when estimated longer than confirm_over"
    )
    p.add_argument(
        "--wait-for-host",
        action="store_true",
        help="queue trials no host could ever run (they wait, saying why) rather than refuse",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="first run one trial per model with the experiment's [smoke] values; queue the"
        " sweep only if each succeeds and reports the metric",
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
    p = sub.add_parser("compare", help="runs side by side: params that differ, metrics, durations")
    p.add_argument("runs", nargs="*", help="run ids, names or @aliases")
    p.add_argument("--sweep", help="every run of this sweep")
    p.add_argument("--all", action="store_true", help="show params that do not differ too")
    p.add_argument(
        "--only-diff",
        action="store_true",
        help="only the params and metrics whose values differ between the runs",
    )
    p.add_argument(
        "--baseline",
        metavar="RUN|KEY=VALUE...",
        help="put this run first and give every other run's metrics their difference from it;"
        " or, with --sweep, every configuration against the one with these params",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "report",
        help="a sweep's exports, figures (PNG, PDF, SVG), resources and reproducibility, tied"
        " together by an index.md",
    )
    p.add_argument("sweep")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--pdf", action="store_true", help="gather the whole report into report.pdf")
    p.add_argument("--json", action="store_true", help='{"out", "files"}')

    p = sub.add_parser("export", help="a sweep's configurations (or runs) as CSV, Parquet or LaTeX")
    p.add_argument("sweep")
    p.add_argument("--format", choices=["csv", "parquet", "latex"], default="csv")
    p.add_argument("--out", metavar="FILE", help="write here (default: stdout; parquet needs it)")
    p.add_argument("--runs", action="store_true", help="one row per run, not per configuration")
    p.add_argument("--by", metavar="KEY", help="the metric (default: the sweep's)")
    p.add_argument("--mode", choices=["min", "max"])
    p.add_argument(
        "--json",
        action="store_true",
        help='the rows as JSON; with --out, {"out", "format", "rows"} once written',
    )

    p = sub.add_parser("sql", help="read-only SQL over the views runs_v, metrics_v, params_v")
    p.add_argument("query")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", action="store_true")
