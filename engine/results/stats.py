"""Seed statistics for papers: a metric's natural bounds, each configuration's 95% confidence
interval over seeds, Welch's t-test of the best against the runner-up, and each
configuration's paired difference from a baseline (SciPy, loaded when a statistic is made)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
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


WILCOXON_FROM = 6  # pairs: fewer cannot reach p < 0.05 in Wilcoxon's two-sided test


def against_baseline(configs: list[dict[str, Any]], baseline: dict[str, Any]) -> None:
    """Mark the baseline's configuration (the one with these params) `baseline`, and give
    every other one `vs_baseline`: its runs paired with the baseline's by seed (and fold),
    the mean difference (this minus the baseline) with a 95% interval, a paired
    t-test and, from 6 pairs, Wilcoxon's signed-rank test (both two-sided), and whether the
    difference is `significant` at 5% by the t-test. Needs each config's `seeds` and
    `values`; nothing is marked when no configuration is the baseline."""
    base = next((c for c in configs if c["params"] == baseline), None)
    if base is None:
        return
    base["baseline"] = True
    of_run = dict(zip(_matched(base), base["values"], strict=True))
    for config in configs:
        if config is base:
            continue
        pairs = [
            (v, of_run[k])
            for k, v in zip(_matched(config), config["values"], strict=True)
            if k in of_run
        ]
        config["vs_baseline"] = paired(pairs)


def _matched(config: dict[str, Any]) -> list[tuple[int, int | None]]:
    """What pairs a configuration's runs with another's: seed and cross-validation fold."""
    folds = config.get("fold_of_run") or [None] * len(config["seeds"])
    return list(zip(config["seeds"], folds, strict=True))


def against_baseline_rows(
    configs: list[dict[str, Any]], sep: str = ", "
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], str]]]:
    """The baseline's configuration (as `against_baseline` marked it), and every other one
    compared with it, each with what it changes ("C=0.1, scale=False")."""
    [base] = [c for c in configs if c.get("baseline")]
    rows = [
        (c, sep.join(f"{k}={v}" for k, v in c["params"].items() if base["params"].get(k) != v))
        for c in configs
        if c is not base and c.get("vs_baseline") is not None
    ]
    return base, rows


def paired(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """The difference of matched values (a, b): n, mean of a - b, its 95% interval, the paired
    t-test and Wilcoxon's (None where n or the spread does not allow one)."""
    n = len(pairs)
    diffs = [a - b for a, b in pairs]
    out: dict[str, Any] = {"n": n, "delta": sum(diffs) / n if n else None, "ci95": None}
    out |= {"t": None, "p": None, "wilcoxon_p": None, "significant": False}
    if n < 2:
        return out
    from scipy import stats

    mean = out["delta"]
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    out["ci95"] = confidence_interval(mean, std, n)
    if std > 0:
        test = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
        out["t"], out["p"] = float(test.statistic), float(test.pvalue)
        out["significant"] = out["p"] < 0.05
    if n >= WILCOXON_FROM and any(diffs):
        out["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
    return out
