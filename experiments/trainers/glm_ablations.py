"""A logistic regression on breast-cancer data whose every choice can be switched, for a
baseline and its ablations: regularisation strength and penalty, class weights, scaling.
A fixed 20% of the data is held out as the test set (the same for every run); the rest is
split by stratified K-fold (`--fold`, `--folds`; the split depends on the seed only, so every
configuration sees the same folds) or, without `--fold`, 30% of it validates. The fitted
model and its validation rows are saved for `glm_evaluate.py`."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import numpy as np
from common import auc, report, save_predictions, seed_everything


def splits(seed: int, fold: int | None, folds: int) -> dict[str, np.ndarray]:
    """Row indexes of breast-cancer data for `train`, `val` and `test`."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import StratifiedKFold, train_test_split

    _, y = load_breast_cancer(return_X_y=True)
    rows = np.arange(len(y))
    dev, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=y)
    if fold is None:
        train, val = train_test_split(dev, test_size=0.3, random_state=seed, stratify=y[dev])
    else:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        inner_train, inner_val = list(cv.split(dev, y[dev]))[fold]
        train, val = dev[inner_train], dev[inner_val]
    return {"train": train, "val": val, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation")
    parser.add_argument("--penalty", choices=["l1", "l2"], default="l2")
    parser.add_argument("--class-weight", choices=["balanced", "none"], default="balanced")
    parser.add_argument("--scale", choices=["true", "false"], default="true")
    parser.add_argument("--fold", type=int, help="which fold validates (0 .. folds - 1)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    seed = seed_everything(args.seed)

    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    rows = splits(seed, args.fold, args.folds)
    model = make_pipeline(
        StandardScaler() if args.scale == "true" else FunctionTransformer(),
        LogisticRegression(
            C=args.C,
            penalty=args.penalty,
            class_weight=None if args.class_weight == "none" else "balanced",
            solver="liblinear",
            max_iter=5000,
            random_state=seed,
        ),
    )
    model.fit(x[rows["train"]], y[rows["train"]])
    x_val, y_val = x[rows["val"]], y[rows["val"]]
    scores = model.predict_proba(x_val)
    report(step=0, val_auc=auc(y_val, scores), val_acc=(model.predict(x_val) == y_val).mean())
    save_predictions(y_val, scores)
    folder = os.environ.get("RUNYARD_ARTIFACT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / "model.pkl", "wb") as f:
            pickle.dump({"model": model, "rows": rows}, f)


if __name__ == "__main__":
    main()
