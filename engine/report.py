"""Results for papers: seed statistics of a sweep's configurations (mean, standard deviation,
95% confidence interval), a Welch t-test of the best against the runner-up, and exports of
those rows as CSV, Parquet or a LaTeX booktabs table."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BOUNDED_NAMES = re.compile(r"(^|[^a-z])(auc|roc|acc|accuracy|f1|precision|recall|iou|dice)")


def bounds_of(metric: str, bounds: Sequence[float] | None = None) -> tuple[float, float] | None:
    """The range a metric cannot leave: as the experiment says, else [0, 1] for AUC, accuracy,
    F1 and their kind (by name), else none."""
    if bounds is not None:
        return float(bounds[0]), float(bounds[1])
    return (0.0, 1.0) if BOUNDED_NAMES.search(metric.lower()) else None


def with_statistics(
    configs: list[dict[str, Any]], mode: str, bounds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Each configuration (mean, std and n over seeds) given a 95% confidence interval of its
    mean (cut at the metric's bounds, with `ci95_clipped` saying so), and the Welch t-test of
    the best configuration against the runner-up: is the best really better?"""
    for config in configs:
        ci = confidence_interval(config["mean"], config["std"], config["n"])
        config["ci95_clipped"] = False
        if ci is not None and bounds is not None and (ci[0] < bounds[0] or ci[1] > bounds[1]):
            ci = [max(ci[0], bounds[0]), min(ci[1], bounds[1])]
            config["ci95_clipped"] = True
        config["ci95"] = ci
    comparison = welch(configs[0], configs[1], mode) if len(configs) >= 2 else None
    return {"configs": configs, "best_vs_runner_up": comparison}


def confidence_interval(mean: float, std: float, n: int, level: float = 0.95) -> list[float] | None:
    """The t-based interval of a mean over `n` seeds; None with fewer than two."""
    if n < 2:
        return None
    from scipy import stats  # loaded where statistics are made, not by every CLI call

    half = std / math.sqrt(n) * float(stats.t.ppf((1 + level) / 2, n - 1))
    return [mean - half, mean + half]


def welch(best: dict[str, Any], other: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """Welch's t-test (unequal variances) of the best configuration against another, from
    their means, standard deviations and counts; `p` is one-sided, for "the best is better"."""
    if best["n"] < 2 or other["n"] < 2 or best["std"] == other["std"] == 0:
        return None
    from scipy import stats

    result = stats.ttest_ind_from_stats(
        best["mean"], best["std"], best["n"], other["mean"], other["std"], other["n"],
        equal_var=False, alternative="greater" if mode == "max" else "less",
    )  # fmt: skip
    if math.isnan(result.statistic):
        return None
    n1, n2 = best["n"], other["n"]
    v1, v2 = best["std"] ** 2 / n1, other["std"] ** 2 / n2
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))  # Welch-Satterthwaite
    return {"t": float(result.statistic), "p": float(result.pvalue), "df": df}


def compare(runs: list[Any], details: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs side by side: every param (and whether it differs), each metric's last, min and
    max, and duration, host and status."""
    names = sorted({k for run in runs for k in run.params})
    params = [
        {
            "name": name,
            "values": [run.params.get(name) for run in runs],
            "differs": len({repr(run.params.get(name)) for run in runs}) > 1,
        }
        for name in names
    ]
    keys = sorted({m["key"] for d in details for m in d.get("metrics", [])})
    metrics = []
    for key in keys:
        per_run = []
        for d in details:
            found = next((m for m in d.get("metrics", []) if m["key"] == key), None)
            per_run.append(
                {k: found[k] for k in ("last", "min", "max", "count")} if found else None
            )
        metrics.append({"key": key, "runs": per_run})
    return {
        "runs": [
            {
                "id": run.id,
                "name": run.name,
                "status": str(run.status),
                "host": run.host,
                "seed": run.seed,
                "duration_s": run.elapsed(),
            }
            for run in runs
        ],
        "params": params,
        "metrics": metrics,
    }


def config_rows(
    configs: list[dict[str, Any]], metric: str, summary: str = "last"
) -> list[dict[str, Any]]:
    """One flat row per configuration: model, params, and the metric's summary over seeds
    (of each run's `summary` value, named in the `value` column)."""
    rows = []
    for c in configs:
        ci = c.get("ci95") or [None, None]
        rows.append(
            {
                "model": c.get("model_type") or "",
                **{f"param_{k}": v for k, v in c["params"].items()},
                f"{metric}_mean": c["mean"],
                f"{metric}_std": c["std"],
                f"{metric}_ci95_low": ci[0],
                f"{metric}_ci95_high": ci[1],
                "ci95_clipped": c.get("ci95_clipped", False),
                "value": summary,
                "seeds": c["n"],
                "best_run": c["best_run"],
            }
        )
    return rows


def run_rows(
    configs: list[dict[str, Any]], metric: str, summary: str = "last"
) -> list[dict[str, Any]]:
    """One flat row per run: model, params, seed and the run's `summary` value of the metric
    (named in the `value` column)."""
    rows = []
    for c in configs:
        for run_id, seed, value in zip(c["runs"], c["seeds"], c["values"], strict=True):
            rows.append(
                {
                    "run": run_id,
                    "model": c.get("model_type") or "",
                    **{f"param_{k}": v for k, v in c["params"].items()},
                    "seed": seed,
                    metric: value,
                    "value": summary,
                }
            )
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns = _columns(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _columns(rows)
    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    pq.write_table(table, path)


def to_latex(configs: list[dict[str, Any]], metric: str, mode: str, caption: str) -> str:
    """A booktabs table, one row per configuration: params, then `mean ± std` of the metric,
    the best mean in bold. Text is escaped for LaTeX."""
    names = sorted({k for c in configs for k in c["params"]})
    models = any(c.get("model_type") for c in configs)
    header = (["Model"] if models else []) + [escape(n) for n in names] + [escape(metric), "$n$"]
    align = "l" * (len(header) - 2) + "rr"
    best = (max if mode == "max" else min)((c["mean"] for c in configs), default=None)
    lines = [
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{escape(caption)}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    for c in configs:
        cell = f"${c['mean']:.4f} \\pm {c['std']:.4f}$"
        if best is not None and c["mean"] == best:
            cell = f"$\\mathbf{{{c['mean']:.4f}}} \\pm {c['std']:.4f}$"
        row = ([escape(c.get("model_type") or "")] if models else []) + [
            escape(str(c["params"].get(n, "--"))) for n in names
        ]
        lines.append(" & ".join([*row, cell, str(c["n"])]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


_LATEX_SPECIAL = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
}


def escape(text: str) -> str:
    """Text made safe inside a LaTeX table cell."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


# --- the report: exports, plots and an index --------------------------------------------------


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
        made += _plot_curves(out, configs, curves, metric)
        made += _plot_against_params(out, configs, metric)
        made += _plot_importance(out, configs, metric, mode)
        made += _plot_predictions(out, configs, predictions, notes)
    (out / "index.md").write_text(_index(best, made, notes))
    return ["index.md", *made]


def _label(config: dict[str, Any]) -> str:
    model = f"{config['model_type']} " if config.get("model_type") else ""
    return model + " ".join(f"{k}={v}" for k, v in config["params"].items())


def _plot_curves(out: Path, configs: list, curves: dict, metric: str) -> list[str]:
    """The metric over steps for the ten best configurations, mean over seeds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for config in configs[:10]:
        per_step: dict[float, list[float]] = {}
        for run_id in config["runs"]:
            for i, p in enumerate(curves.get(run_id, [])):
                if p["key"] == metric:
                    per_step.setdefault(p["step"] if p["step"] is not None else i, []).append(
                        p["value"]
                    )
        if len(per_step) > 1:
            steps = sorted(per_step)
            ax.plot(
                steps,
                [sum(per_step[s]) / len(per_step[s]) for s in steps],
                label=_label(config)[:40],
            )
            drawn += 1
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.set_title(f"training curves: {metric}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return ["curves.png"]


def _plot_against_params(out: Path, configs: list, metric: str) -> list[str]:
    """Each run's metric against each parameter (numbers on a numeric axis, else categories)."""
    import matplotlib.pyplot as plt

    made = []
    names = sorted({k for c in configs for k in c["params"]})
    for name in names:
        xs, ys = [], []
        for c in configs:
            if name in c["params"]:
                xs += [c["params"][name]] * len(c["values"])
                ys += c["values"]
        if not xs:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        ax.scatter(xs if numeric else [str(x) for x in xs], ys, alpha=0.7)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} against {name} (one point per run)")
        fig.tight_layout()
        file = f"{metric}_vs_{_safe(name)}.png"
        fig.savefig(out / file, dpi=120)
        plt.close(fig)
        made.append(file)
    return made


def _plot_importance(out: Path, configs: list, metric: str, mode: str) -> list[str]:
    """Optuna's parameter importance (fANOVA) over the configurations of the largest model."""
    import matplotlib.pyplot as plt
    import optuna

    groups: dict[tuple, list] = {}
    for c in configs:
        groups.setdefault((c.get("model_type"), tuple(sorted(c["params"]))), []).append(c)
    (model, names), group = max(groups.items(), key=lambda kv: len(kv[1]))
    if len(group) < 3 or not names:
        return []
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = {
        n: optuna.distributions.CategoricalDistribution(
            sorted({c["params"][n] for c in group}, key=repr)
        )
        for n in names
    }
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for c in group:
        study.add_trial(
            optuna.trial.create_trial(params=c["params"], distributions=space, value=c["mean"])
        )
    try:
        importance = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return []
    fig, ax = plt.subplots(figsize=(6, 1 + 0.5 * len(importance)))
    ax.barh(list(importance)[::-1], list(importance.values())[::-1])
    ax.set_xlabel(f"importance for {metric}")
    ax.set_title(f"parameter importance{f' ({model})' if model else ''}")
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=120)
    plt.close(fig)
    return ["importance.png"]


def _plot_predictions(out: Path, configs: list, predictions: dict, notes: list[str]) -> list[str]:
    """ROC (with AUC) and reliability curves of each configuration's best run that saved
    `y_true` and `y_score`; a multi-class score is taken one-vs-rest (micro-average) for ROC
    and by its top class for calibration."""
    import matplotlib.pyplot as plt
    import numpy as np

    try:
        from sklearn.calibration import calibration_curve
        from sklearn.metrics import auc, roc_curve
        from sklearn.preprocessing import label_binarize
    except ImportError:
        notes.append("ROC and calibration plots need scikit-learn, which is not installed.")
        return []
    chosen = [(c, predictions[c["best_run"]]) for c in configs[:8] if c["best_run"] in predictions]
    if not chosen:
        notes.append("No run of this sweep saved predictions (y_true, y_score).")
        return []
    roc_fig, roc_ax = plt.subplots(figsize=(6, 6))
    cal_fig, cal_ax = plt.subplots(figsize=(6, 6))
    for config, path in chosen:
        data = np.load(path)
        y_true, y_score = data["y_true"], data["y_score"]
        if y_score.ndim == 2 and y_score.shape[1] == 2:
            y_score = y_score[:, 1]
        if y_score.ndim == 2:  # multi-class
            classes = np.arange(y_score.shape[1])
            onehot = label_binarize(y_true, classes=classes)
            fpr, tpr, _ = roc_curve(onehot.ravel(), y_score.ravel())
            confidence = y_score.max(axis=1)
            correct = (y_score.argmax(axis=1) == y_true).astype(int)
        else:
            fpr, tpr, _ = roc_curve(y_true, y_score)
            confidence, correct = y_score, y_true
        label = f"run {config['best_run']}: {_label(config)}"[:50]
        roc_ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
        prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=8, strategy="quantile")
        cal_ax.plot(prob_pred, prob_true, marker="o", label=label)
    roc_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    cal_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    cal_ax.set(xlabel="predicted probability", ylabel="observed frequency", title="calibration")
    for fig, ax, file in ((roc_fig, roc_ax, "roc.png"), (cal_fig, cal_ax, "calibration.png")):
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / file, dpi=120)
        plt.close(fig)
    return ["roc.png", "calibration.png"]


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
            f"| {_label(c)} | {c['mean']:.4f} ± {c['std']:.4f} | {interval} | {c['n']} | {c['best_run']} |"
        )
    test = best.get("best_vs_runner_up")
    if test:
        verdict = "better" if test["p"] < 0.05 else "not clearly better"
        lines += [
            "",
            f"Best against runner-up (Welch's t-test, one-sided): t = {test['t']:.3f}, "
            f"df = {test['df']:.2f}, p = {test['p']:.3g}: {verdict} at the 5% level.",
        ]
    lines += ["", "## Files", ""]
    lines += [f"- [{file}]({file})" for file in made if not file.endswith(".png")]
    for file in made:
        if file.endswith(".png"):
            lines += ["", f"![{file}]({file})"]
    if notes:
        lines += ["", *(f"_{n}_" for n in notes)]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
