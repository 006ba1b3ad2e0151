"""What the example trainers share: datasets that ship with scikit-learn (or synthetic ones),
the seed and folders Runyard passes in, `@runyard` metric lines, and saved predictions."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np


def seed_everything(seed: int | None) -> int:
    """The run's seed: --seed, else $RUNYARD_SEED, else 0; applied to Python and NumPy."""
    if seed is None:
        seed = int(os.environ.get("RUNYARD_SEED", "0"))
    random.seed(seed)
    np.random.seed(seed)
    return seed


def load(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation splits of `digits`, `breast_cancer` or `synthetic-N` (N rows)."""
    from sklearn.datasets import load_breast_cancer, load_digits, make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if dataset == "digits":
        x, y = load_digits(return_X_y=True)
    elif dataset == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
    elif dataset.startswith("synthetic-"):
        rows = int(dataset.removeprefix("synthetic-"))
        x, y = make_classification(
            n_samples=rows, n_features=40, n_informative=20, random_state=seed
        )
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: digits, breast_cancer or synthetic-N")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def report(step: int | None = None, **values: float) -> None:
    """One metric line for Runyard (plain stdout; no import of Runyard needed)."""
    payload = ({"step": step} if step is not None else {}) | {
        k: float(v) for k, v in values.items()
    }
    print("@runyard " + json.dumps(payload), flush=True)


def auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    return float(
        roc_auc_score(y_true, scores, multi_class="ovr")
        if scores.ndim == 2
        else roc_auc_score(y_true, scores)
    )


def save_predictions(y_true: np.ndarray, y_score: np.ndarray) -> Path | None:
    """Validation labels and scores, for ROC and calibration plots later."""
    folder = os.environ.get("RUNYARD_ARTIFACT_DIR")
    if not folder:
        return None
    path = Path(folder) / "predictions.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, y_true=y_true, y_score=y_score)
    return path


def checkpoint_dir() -> Path | None:
    folder = os.environ.get("RUNYARD_CHECKPOINT_DIR")
    return Path(folder) if folder else None
