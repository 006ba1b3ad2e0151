"""A report's figures (matplotlib, loaded when one is drawn): training curves, the metric
against each parameter, parameter importance, ROC and calibration curves. Each is written as
PNG, PDF and SVG (vector figures for LaTeX), with a caption saying what is drawn and what is
not."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("png", "pdf", "svg")
FEW_TRIALS = 10  # parameter importance from fewer configurations than this is unreliable
FADED = 0.25  # the opacity of pruned and failed runs


def short(value: Any) -> str:
    """A parameter value for a label: a float to three significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def config_label(config: dict[str, Any]) -> str:
    model = f"{config['model_type']} " if config.get("model_type") else ""
    return model + " ".join(f"{k}={short(v)}" for k, v in config["params"].items())


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


@dataclass
class Figure:
    """One figure of the report: its files (one per format) and its caption."""

    stem: str
    caption: str

    @property
    def files(self) -> list[str]:
        return [f"{self.stem}.{fmt}" for fmt in FORMATS]


@dataclass
class Figures:
    """Where a report's figures go: each written in every format; with `keep`, also kept
    open, in order, to be gathered into one PDF."""

    out: Path
    keep: bool = False
    made: list[Figure] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)

    def save(self, fig: Any, stem: str, caption: str) -> None:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        for fmt in FORMATS:
            fig.savefig(self.out / f"{stem}.{fmt}", dpi=120 if fmt == "png" else None)
        self.made.append(Figure(stem, caption))
        if self.keep:
            self.kept.append(fig)
        else:
            plt.close(fig)


def runs_counted(runs: Sequence[dict[str, Any]]) -> str:
    """'1 failed and 3 pruned runs', by status ('' for none)."""
    by_status = Counter(run["status"] for run in runs)
    if not by_status:
        return ""
    parts = [f"{n} {status}" for status, n in sorted(by_status.items())]
    return " and ".join(parts) + f" run{'s' if len(runs) > 1 else ''}"


def plot_curves(
    figures: Figures,
    configs: list[dict[str, Any]],
    curves: dict[int, list[dict[str, Any]]],
    metric: str,
    faded: Sequence[dict[str, Any]] = (),
) -> None:
    """The metric over steps for the ten best configurations (mean over seeds), pruned and
    failed runs faded; a panel per model where models count steps in their own units (epochs,
    boosting rounds). A model whose runs report one value each has no curve and no panel."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    lines: dict[str, list[tuple[list[float], list[float], str | None]]] = {}
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
            means = [sum(per_step[s]) / len(per_step[s]) for s in steps]
            lines.setdefault(config.get("model_type") or "", []).append(
                (steps, means, config_label(config)[:40])
            )
            drawn += 1
    shown_faded = 0
    for run in faded:
        points = [p for p in curves.get(run["id"], []) if p["key"] == metric]
        if len(points) > 1:
            xs = [p["step"] if p["step"] is not None else i for i, p in enumerate(points)]
            lines.setdefault(run.get("model_type") or "", []).append(
                (xs, [p["value"] for p in points], None)
            )
            shown_faded += 1
    if not lines:
        return
    models = sorted(lines)
    columns = min(2, len(models))
    rows = math.ceil(len(models) / columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(8 if columns == 1 else 11, 5 if rows == 1 else 4 * rows),
        squeeze=False,
    )
    for at, model in enumerate(models):
        ax = axes[at // columns][at % columns]
        for xs, ys, label in lines[model]:
            if label is None:  # a pruned or failed run
                ax.plot(xs, ys, color="grey", alpha=FADED, linewidth=0.8)
            else:
                ax.plot(xs, ys, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"step ({model}'s own unit)" if len(models) > 1 else "step")
        ax.set_ylabel(f"{metric} (mean over seeds)")
        ax.set_title(model if len(models) > 1 else f"training curves: {metric}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    for at in range(len(models), rows * columns):
        axes[at // columns][at % columns].set_visible(False)
    best = min(10, len(configs))
    caption = (
        f"{metric} over training, mean over seeds, of the {best} best configurations: the"
        f" {drawn} that report more than one value"
    )
    if len(models) > 1:
        caption += "; one panel per model, as each counts its steps in its own unit"
    if faded:
        caption += f"; {runs_counted(faded)} in the sweep, {shown_faded} drawn faded in grey"
    figures.save(fig, "curves", caption + ".")


def plot_against_params(
    figures: Figures,
    configs: list[dict[str, Any]],
    metric: str,
    log_params: Sequence[str] = (),
    faded: Sequence[dict[str, Any]] = (),
) -> None:
    """Each run's metric against each parameter (numbers on a numeric axis, a log one for a
    parameter sampled on a log scale, else categories); pruned and failed runs faded."""
    import matplotlib.pyplot as plt

    names = sorted({k for c in configs for k in c["params"]})
    for name in names:
        xs, ys = [], []
        for c in configs:
            if name in c["params"]:
                xs += [c["params"][name]] * len(c["values"])
                ys += c["values"]
        gone = [r for r in faded if name in r["params"] and r.get("value") is not None]
        gone = [r for r in gone if math.isfinite(r["value"])]
        if not xs:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        every = xs + [r["params"][name] for r in gone]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in every)
        ax.scatter(xs if numeric else [str(x) for x in xs], ys, alpha=0.7, label="succeeded")
        if gone:
            gx = [r["params"][name] for r in gone]
            ax.scatter(
                gx if numeric else [str(x) for x in gx],
                [r["value"] for r in gone],
                alpha=FADED,
                color="grey",
                marker="x",
                label="pruned or failed (last value)",
            )
            ax.legend(fontsize=7)
        log = name in log_params or (numeric and min(every) > 0 and max(every) / min(every) >= 100)
        if numeric and min(every) > 0 and log:
            ax.set_xscale("log")
        ax.set_xlabel(name + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} against {name} (one point per run)")
        caption = f"{metric} against {name}, one point per succeeded run"
        if ax.get_xscale() == "log":
            caption += "; x on a log scale" + (
                " (the parameter was sampled log-uniformly)" if name in log_params else ""
            )
        if faded:
            caption += f"; {runs_counted(faded)}, {len(gone)} drawn faded (x) at their last value"
        figures.save(fig, f"{safe_name(metric)}_vs_{safe_name(name)}", caption + ".")


def plot_importance(
    figures: Figures, configs: list[dict[str, Any]], metric: str, mode: str
) -> None:
    """Optuna's parameter importance (fANOVA) over the configurations of the largest model;
    labelled unreliable when it rests on fewer than FEW_TRIALS of them."""
    import matplotlib.pyplot as plt
    import optuna

    groups: dict[tuple, list] = {}
    for c in configs:
        groups.setdefault((c.get("model_type"), tuple(sorted(c["params"]))), []).append(c)
    (model, names), group = max(groups.items(), key=lambda kv: len(kv[1]))
    if len(group) < 3 or not names:
        return
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
        return
    unreliable = len(group) < FEW_TRIALS
    fig, ax = plt.subplots(figsize=(6, 1.5 + 0.5 * len(importance)))
    ax.barh(
        list(importance)[::-1],
        list(importance.values())[::-1],
        color="grey" if unreliable else None,
    )
    ax.set_xlabel(f"importance for {metric}")
    title = f"parameter importance{f' ({model})' if model else ''}"
    if unreliable:
        title += f"\nUNRELIABLE: from only {len(group)} configurations (< {FEW_TRIALS})"
    ax.set_title(title, fontsize=10)
    caption = f"fANOVA parameter importance over {len(group)} configurations"
    if unreliable:
        caption += f"; unreliable, as it rests on fewer than {FEW_TRIALS}"
    figures.save(fig, "importance", caption + ".")


def plot_predictions(
    figures: Figures, configs: list[dict[str, Any]], predictions: dict, notes: list[str]
) -> None:
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
        return
    chosen = [(c, predictions[c["best_run"]]) for c in configs[:8] if c["best_run"] in predictions]
    if not chosen:
        notes.append("No run of this sweep saved predictions (y_true, y_score).")
        return
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
        label = f"run {config['best_run']}: {config_label(config)}"[:50]
        roc_ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
        prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=8, strategy="quantile")
        cal_ax.plot(prob_pred, prob_true, marker="o", label=label)
    roc_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    cal_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    cal_ax.set(xlabel="predicted probability", ylabel="observed frequency", title="calibration")
    for ax in (roc_ax, cal_ax):
        ax.legend(fontsize=7, loc="lower right")
    n = len(chosen)
    figures.save(roc_fig, "roc", f"ROC curves of the best run of {n} configurations.")
    figures.save(
        cal_fig, "calibration", f"Reliability curves of the best run of {n} configurations."
    )
