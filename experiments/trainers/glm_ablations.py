"""A logistic regression on breast-cancer data whose every choice can be switched, for a
baseline and its ablations: regularisation strength and penalty, class weights, scaling.
Validated on one fold of a stratified K-fold split (`--fold`, `--folds`; the split depends on
the seed only, so every configuration sees the same folds), else on a 30% hold-out."""

from __future__ import annotations

import argparse

from common import auc, report, save_predictions, seed_everything


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
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    if args.fold is None:
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=0.3, random_state=seed, stratify=y
        )
    else:
        splits = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=seed)
        train, val = list(splits.split(x, y))[args.fold]
        x_train, x_val, y_train, y_val = x[train], x[val], y[train], y[val]
    if args.scale == "true":
        scaler = StandardScaler().fit(x_train)
        x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    model = LogisticRegression(
        C=args.C,
        penalty=args.penalty,
        class_weight=None if args.class_weight == "none" else "balanced",
        solver="liblinear",
        max_iter=5000,
        random_state=seed,
    )
    model.fit(x_train, y_train)
    scores = model.predict_proba(x_val)
    report(step=0, val_auc=auc(y_val, scores), val_acc=(model.predict(x_val) == y_val).mean())
    save_predictions(y_val, scores)


if __name__ == "__main__":
    main()
