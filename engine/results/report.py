"""A sweep's report in one folder: its exports, its figures (PNG, PDF and SVG), what it cost
and what made it, tied together by an index.md; with `pdf`, all of it in one report.pdf."""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.results.export import config_rows, run_rows, to_csv, to_latex, to_parquet
from engine.results.plots import (
    Figures,
    config_label,
    plot_against_params,
    plot_curves,
    plot_importance,
    plot_predictions,
    runs_counted,
)
from engine.results.reproducibility import provenance
from engine.results.resources import plot_utilisation, resources
from engine.results.stats import against_baseline_rows

PDF_LINES = 72  # lines of text on one page of report.pdf


@dataclass
class ReportInputs:
    """What the daemon gathers for a sweep's report."""

    best: dict[str, Any]  # the sweep's configurations with statistics (as `engine best`)
    curves: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # run → its points
    predictions: dict[int, Path] = field(default_factory=dict)  # run → its predictions.npz
    faded: list[dict[str, Any]] = field(default_factory=list)  # pruned and failed runs
    runs: list[dict[str, Any]] = field(default_factory=list)  # every run's facts
    samples: list[tuple[Any, ...]] = field(default_factory=list)  # host samples in its window
    slots: int = 1  # how many of its runs could run at once
    log_params: list[str] = field(default_factory=list)  # sampled on a log scale


def write_report(
    out: Path, given: ReportInputs, plots: bool = True, pdf: bool = False
) -> list[str]:
    """Write a sweep's report into `out`: the exports, the figures (not with `plots=False`),
    the resources and reproducibility sections, and an `index.md` tying them together; with
    `pdf`, report.pdf too. Returns what it made."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out.mkdir(parents=True, exist_ok=True)
    best = given.best
    metric, mode = best["metric"], best["mode"]
    configs = best["configs"]
    made = []
    summary = best.get("summary", "last")
    (out / "configs.csv").write_text(to_csv(config_rows(configs, metric, summary)))
    (out / "runs.csv").write_text(to_csv(run_rows(configs, metric, summary)))
    to_parquet(config_rows(configs, metric, summary), out / "configs.parquet")
    caption = f"{best['sweep']}: {metric} ({summary} value of each run)"
    (out / "table.tex").write_text(to_latex(configs, metric, mode, caption))
    made += ["configs.csv", "runs.csv", "configs.parquet", "table.tex"]
    notes: list[str] = []
    figures = Figures(out, keep=pdf)
    cost = resources(given.runs, given.samples, given.slots)
    if plots:
        plot_curves(figures, configs, given.curves, metric, given.faded)
        plot_against_params(figures, configs, metric, given.log_params, given.faded)
        plot_importance(figures, configs, metric, mode)
        plot_predictions(figures, configs, given.predictions, notes)
        if cost is not None:
            plot_utilisation(figures, given.samples, cost["start"], cost["end"])
    for figure in figures.made:
        made += figure.files
    tabled = {run_id for c in configs for run_id in c.get("runs", [])}
    made_with = provenance([r for r in given.runs if r["id"] in tabled])
    index = _index(best, given.faded, figures, cost, made_with, made, notes)
    (out / "index.md").write_text(index)
    if pdf:
        _gather_pdf(out / "report.pdf", index, figures.kept)
        made.append("report.pdf")
    return ["index.md", *made]


def _gather_pdf(path: Path, text: str, kept: list[Any]) -> None:
    """The index as pages of text, then every figure as a page of its own (as vectors)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    lines: list[str] = []
    for line in text.splitlines():
        lines += textwrap.wrap(line, 118, subsequent_indent="    ") or [""]
    with PdfPages(path) as pages:
        for at in range(0, len(lines), PDF_LINES):
            page = plt.figure(figsize=(8.27, 11.69))  # A4
            shown = "\n".join(lines[at : at + PDF_LINES]).replace("$", r"\$")
            page.text(0.04, 0.98, shown, family="monospace", fontsize=6.5, va="top")
            pages.savefig(page)
            plt.close(page)
        for fig in kept:
            pages.savefig(fig)
            plt.close(fig)
        info = pages.infodict()
        info["Title"] = text.splitlines()[0].lstrip("# ")
        info["Creator"] = "Runyard engine report"


def _vs_baseline(configs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: the baseline, then what each configuration changes and its difference."""
    base, others = against_baseline_rows(configs)
    lines = [
        f"Baseline: {config_label(base)}, {base['mean']:.4f} ± {base['std']:.4f} over {base['n']}"
        " seeds. Δ is the mean difference over matched seeds; p the paired t-test's and"
        " Wilcoxon's (from 6 pairs), two-sided; a Δ in bold has p < 0.05.",
        "",
        "| change | mean ± std | Δ vs baseline | 95% CI | p (paired t) | p (Wilcoxon) |",
        "|---|---|---|---|---|---|",
    ]
    for c, changed in others:
        vs = c["vs_baseline"]
        delta = "-" if vs["delta"] is None else f"{vs['delta']:+.4f}"
        if vs["significant"]:
            delta = f"**{delta}**"
        ci = "-" if vs["ci95"] is None else f"[{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]"
        p = "-" if vs["p"] is None else f"{vs['p']:.3g}"
        w = "-" if vs["wilcoxon_p"] is None else f"{vs['wilcoxon_p']:.3g}"
        lines.append(
            f"| {changed} | {c['mean']:.4f} ± {c['std']:.4f} | {delta} | {ci} | {p} | {w} |"
        )
    return lines


def _left_out(faded: list[dict[str, Any]]) -> str:
    if not faded:
        return ""
    return f" {runs_counted(faded)} are not in these statistics; the figures draw them faded."


def _resources(cost: dict[str, Any]) -> list[str]:
    minutes = cost["wall_s"] / 60
    efficiency = cost["efficiency"]
    lines = [
        "## Resources",
        "",
        f"From the first run's start to the last run's end: {minutes:.1f} minutes"
        f" ({time.strftime('%Y-%m-%d %H:%M', time.localtime(cost['start']))} to"
        f" {time.strftime('%H:%M', time.localtime(cost['end']))}). The {cost['runs']} runs ran"
        f" {cost['run_s'] / 60:.1f} minutes in all: a parallel speedup of"
        f" **{cost['speedup']:.2f}** (run time over wall time) on {cost['slots']} slots"
        + (f", {efficiency:.0%} of the ideal." if efficiency is not None else "."),
        "",
        "CPU-hours are each run's wall time times the CPUs it reserved (one where it reserved"
        " none); GPU-hours its wall time times the GPUs it held.",
        "",
        "| configuration | runs | run hours | CPU-hours | GPU-hours |",
        "|---|---|---|---|---|",
    ]
    for c in cost["configs"]:
        lines.append(
            f"| {c['config'] or '-'} | {c['runs']} | {c['hours']:.3f} | {c['cpu_hours']:.3f}"
            f" | {c['gpu_hours']:.3f} |"
        )
    if cost["hosts"]:
        lines += [
            "",
            "| host | samples | CPU mean % | CPU peak % | GPUs: mean / peak utilisation % |",
            "|---|---|---|---|---|",
        ]
        for host, h in cost["hosts"].items():
            gpus = ", ".join(
                f"{i}: {g['util_mean']:.0f} / {g['util_peak']:.0f}" for i, g in h["gpus"].items()
            )
            lines.append(
                f"| {host} | {h['samples']} | {h['cpu_mean']:.1f} | {h['cpu_peak']:.1f}"
                f" | {gpus or '-'} |"
            )
    else:
        lines += ["", "_No host samples were stored in the sweep's time window._"]
    return lines


def _reproducibility(made_with: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Reproducibility",
        "",
        "What the runs in the table were made with; `engine reproduce RUN` runs one again from"
        " the same snapshot, command, params and seed.",
        "",
        "| commit | uncommitted changes | snapshot | python | key packages | runs | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in made_with:
        packages = ", ".join(f"{k} {v}" for k, v in row["packages"].items()) or "-"
        runs = row["runs"]
        shown = ", ".join(map(str, runs[:8])) + (f" … ({len(runs)})" if len(runs) > 8 else "")
        lines.append(
            f"| {(row['commit'] or '(none)')[:12]} | {'yes' if row['dirty'] else 'no'}"
            f" | {row['snapshot'] or '-'} | {row['python'] or '-'} | {packages} | {shown}"
            f" | {', '.join(map(str, sorted(row['seeds'])))} |"
        )
    return lines


def _index(
    best: dict[str, Any],
    faded: list[dict[str, Any]],
    figures: Figures,
    cost: dict[str, Any] | None,
    made_with: list[dict[str, Any]],
    made: list[str],
    notes: list[str],
) -> str:
    metric, configs = best["metric"], best["configs"]
    lines = [
        f"# Sweep {best['sweep']}",
        "",
        f"Metric: `{metric}` ({best['mode']}, the {best.get('summary', 'last')} value of each "
        f"run), {len(configs)} configurations, {sum(c['n'] for c in configs)} succeeded runs."
        + _left_out(faded),
        "",
        f"| configuration | {metric} mean ± std | 95% CI | seeds | best run |",
        "|---|---|---|---|---|",
    ]
    for c in configs:
        ci = c.get("ci95")
        interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"
        if c.get("ci95_clipped"):
            interval += " (cut at the metric's bound)"
        lines.append(
            f"| {config_label(c)} | {c['mean']:.4f} ± {c['std']:.4f} | {interval} | {c['n']} | {c['best_run']} |"
        )
    test = best.get("best_vs_runner_up")
    if test:
        verdict = "better" if test["p"] < 0.05 else "not clearly better"
        lines += [
            "",
            f"Best against runner-up (Welch's t-test, one-sided): t = {test['t']:.3f}, "
            f"df = {test['df']:.2f}, p = {test['p']:.3g}: {verdict} at the 5% level.",
        ]
    if any(c.get("baseline") for c in configs):
        lines += ["", "## Against the baseline", "", *_vs_baseline(configs)]
    if figures.made:
        lines += ["", "## Figures"]
        for figure in figures.made:
            lines += [
                "",
                f"![{figure.stem}]({figure.stem}.png)",
                "",
                f"_{figure.caption}_ [PDF]({figure.stem}.pdf) · [SVG]({figure.stem}.svg)",
            ]
    if cost is not None:
        lines += ["", *_resources(cost)]
    if made_with:
        lines += ["", *_reproducibility(made_with)]
    lines += ["", "## Files", ""]
    lines += [f"- [{file}]({file})" for file in made if not file.endswith((".png", ".pdf", ".svg"))]
    if notes:
        lines += ["", *(f"_{n}_" for n in notes)]
    return "\n".join(lines) + "\n"
