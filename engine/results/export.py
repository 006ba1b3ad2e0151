"""A sweep's results as rows (one per configuration, one per run) and those rows as CSV,
Parquet or a LaTeX booktabs table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from engine.results.stats import against_baseline_rows


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
                "seeds": c["n"] // (c.get("folds") or 1),
                **({"folds": c["folds"]} if c.get("folds") else {}),
                "runs": c["n"],
                "best_run": c["best_run"],
                **_vs_baseline_columns(c, metric),
            }
        )
    return rows


def _vs_baseline_columns(config: dict[str, Any], metric: str) -> dict[str, Any]:
    """A configuration's difference from its sweep's baseline, as columns (none without one)."""
    if config.get("baseline"):
        return {"baseline": True}
    vs = config.get("vs_baseline")
    if vs is None:
        return {}
    ci = vs["ci95"] or [None, None]
    return {
        "baseline": False,
        f"{metric}_delta": vs["delta"],
        f"{metric}_delta_ci95_low": ci[0],
        f"{metric}_delta_ci95_high": ci[1],
        "pairs": vs["n"],
        "p_paired_t": vs["p"],
        "p_wilcoxon": vs["wilcoxon_p"],
        "significant": vs["significant"],
    }


def run_rows(
    configs: list[dict[str, Any]], metric: str, summary: str = "last"
) -> list[dict[str, Any]]:
    """One flat row per run: model, params, seed (and fold, with cross-validation) and the
    run's `summary` value of the metric (named in the `value` column)."""
    rows = []
    for c in configs:
        folds = c.get("fold_of_run") or [None] * len(c["runs"])
        for run_id, seed, fold, value in zip(
            c["runs"], c["seeds"], folds, c["values"], strict=True
        ):
            rows.append(
                {
                    "run": run_id,
                    "model": c.get("model_type") or "",
                    **{f"param_{k}": v for k, v in c["params"].items()},
                    "seed": seed,
                    **({"fold": fold} if fold is not None else {}),
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
    the best mean in bold (for a sweep with a baseline, its differences from the baseline
    instead). Text is escaped for LaTeX."""
    if any(c.get("baseline") for c in configs):
        return to_latex_vs_baseline(configs, metric, caption)
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


def to_latex_vs_baseline(configs: list[dict[str, Any]], metric: str, caption: str) -> str:
    """A booktabs table with the baseline's row first, then each other configuration named by
    what it changes, its `mean ± std`, its mean difference from the baseline with a 95%
    interval, and the paired t-test's p; a difference significant at 5% is starred."""
    base, others = against_baseline_rows(configs)
    lines = [
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{escape(caption)}}}",
        "\\begin{tabular}{lrrrr}",
        "\\toprule",
        f"Configuration & {escape(metric)} & $\\Delta$ vs baseline & 95\\% CI & $p$ \\\\",
        "\\midrule",
        f"baseline & ${base['mean']:.4f} \\pm {base['std']:.4f}$ & -- & -- & -- \\\\",
    ]
    for c, changed in others:
        vs = c["vs_baseline"]
        delta = (
            "--"
            if vs["delta"] is None
            else f"${vs['delta']:+.4f}{'^*' if vs['significant'] else ''}$"
        )
        ci = "--" if vs["ci95"] is None else f"$[{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]$"
        p = "--" if vs["p"] is None else f"${vs['p']:.3g}$"
        cell = f"${c['mean']:.4f} \\pm {c['std']:.4f}$"
        lines.append(f"{escape(changed)} & {cell} & {delta} & {ci} & {p} \\\\")
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        "",
        "\\smallskip{\\footnotesize $\\Delta$: mean difference from the baseline over matched"
        " seeds; $p$: paired $t$-test, two-sided; $^*$: $p < 0.05$.}",
        "\\end{table}",
        "",
    ]
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
