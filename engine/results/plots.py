"""A report's figures (matplotlib, loaded when one is drawn): training curves, the metric
against each parameter, parameter importance, ROC and calibration curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def config_label(config: dict[str, Any]) -> str:
    model = f"{config['model_type']} " if config.get("model_type") else ""
    return model + " ".join(f"{k}={v}" for k, v in config["params"].items())


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def plot_curves(out: Path, configs: list, curves: dict, metric: str) -> list[str]:
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
                label=config_label(config)[:40],
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


def plot_against_params(out: Path, configs: list, metric: str) -> list[str]:
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
        file = f"{metric}_vs_{safe_name(name)}.png"
        fig.savefig(out / file, dpi=120)
        plt.close(fig)
        made.append(file)
    return made


def plot_importance(out: Path, configs: list, metric: str, mode: str) -> list[str]:
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


def plot_predictions(out: Path, configs: list, predictions: dict, notes: list[str]) -> list[str]:
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
        label = f"run {config['best_run']}: {config_label(config)}"[:50]
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
