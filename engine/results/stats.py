"""Seed statistics for papers: a metric's natural bounds, each configuration's 95% confidence
interval over seeds, and Welch's t-test of the best against the runner-up (SciPy, loaded
when a statistic is made)."""

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
