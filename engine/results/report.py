"""A sweep's report in one folder: its exports, its figures and an index.md tying them together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.results.export import config_rows, run_rows, to_csv, to_latex, to_parquet
from engine.results.plots import (
    config_label,
    plot_against_params,
    plot_curves,
    plot_importance,
    plot_predictions,
)
from engine.results.stats import against_baseline_rows


def write_report(
    out: Path,
    best: dict[str, Any],
    curves: dict[int, list[dict[str, Any]]],
    predictions: dict[int, Path],
    plots: bool = True,
) -> list[str]:
    """Write a sweep's report into `out`: the exports, PNG plots (training curves per config,
    the metric against each parameter, parameter importance, and ROC and calibration curves of
    runs that saved predictions; not with `plots=False`) and an `index.md` tying them together.
    Returns what it made."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out.mkdir(parents=True, exist_ok=True)
    sweep, metric, mode = best["sweep"], best["metric"], best["mode"]
    configs = best["configs"]
    made = []
    summary = best.get("summary", "last")
    (out / "configs.csv").write_text(to_csv(config_rows(configs, metric, summary)))
    (out / "runs.csv").write_text(to_csv(run_rows(configs, metric, summary)))
    to_parquet(config_rows(configs, metric, summary), out / "configs.parquet")
    caption = f"{sweep}: {metric} ({summary} value of each run)"
    (out / "table.tex").write_text(to_latex(configs, metric, mode, caption))
    made += ["configs.csv", "runs.csv", "configs.parquet", "table.tex"]
    notes: list[str] = []
    if plots:
        made += plot_curves(out, configs, curves, metric)
        made += plot_against_params(out, configs, metric)
        made += plot_importance(out, configs, metric, mode)
        made += plot_predictions(out, configs, predictions, notes)
    (out / "index.md").write_text(_index(best, made, notes))
    return ["index.md", *made]


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


def _index(best: dict[str, Any], made: list[str], notes: list[str]) -> str:
    metric, configs = best["metric"], best["configs"]
    lines = [
        f"# Sweep {best['sweep']}",
        "",
        f"Metric: `{metric}` ({best['mode']}, the {best.get('summary', 'last')} value of each "
        f"run), {len(configs)} configurations, {sum(c['n'] for c in configs)} runs.",
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
    lines += ["", "## Files", ""]
    lines += [f"- [{file}]({file})" for file in made if not file.endswith(".png")]
    for file in made:
        if file.endswith(".png"):
            lines += ["", f"![{file}]({file})"]
    if notes:
        lines += ["", *(f"_{n}_" for n in notes)]
    return "\n".join(lines) + "\n"
