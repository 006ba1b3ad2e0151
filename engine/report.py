"""Results for papers: seed statistics of a sweep's configurations (mean, standard deviation,
95% confidence interval), a Welch t-test of the best against the runner-up, and exports of
those rows as CSV, Parquet or a LaTeX booktabs table."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from scipy import stats


def with_statistics(configs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Each configuration (with its `values` over seeds) given a 95% confidence interval of its
    mean, and the Welch t-test of the best configuration against the runner-up: is the best
    really better?"""
    for config in configs:
        config["ci95"] = confidence_interval(config["values"])
    comparison = None
    if len(configs) >= 2:
        comparison = welch(configs[0]["values"], configs[1]["values"], mode)
    return {"configs": configs, "best_vs_runner_up": comparison}


def confidence_interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """The t-based interval of the mean over seeds; None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sem = float(stats.sem(values))
    if sem == 0 or math.isnan(sem):
        return [mean, mean]
    half = sem * float(stats.t.ppf((1 + level) / 2, n - 1))
    return [mean - half, mean + half]


def welch(best: list[float], other: list[float], mode: str) -> dict[str, Any] | None:
    """Welch's t-test (unequal variances) of the best configuration against another; `p` is
    one-sided, for "the best is better"."""
    if len(best) < 2 or len(other) < 2:
        return None
    alternative = "greater" if mode == "max" else "less"
    result = stats.ttest_ind(best, other, equal_var=False, alternative=alternative)
    if math.isnan(result.statistic):
        return None
    return {"t": float(result.statistic), "p": float(result.pvalue), "df": float(result.df)}


def config_rows(configs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One flat row per configuration: model, params, and the metric's summary over seeds."""
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
                "seeds": c["n"],
                "best_run": c["best_run"],
            }
        )
    return rows


def run_rows(configs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One flat row per run: model, params, seed and the run's best value of the metric."""
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
