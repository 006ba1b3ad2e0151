"""A sweep's results as rows (one per configuration, one per run) and those rows as CSV,
Parquet or a LaTeX booktabs table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any


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
