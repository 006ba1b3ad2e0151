"""CPU baselines: logistic regression (the GLM) and a random forest, on a bundled dataset."""

from __future__ import annotations

import argparse

from common import auc, load, report, save_predictions, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["glm", "rf"], default="glm")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--C", type=float, default=1.0, help="GLM inverse regularisation")
    parser.add_argument("--n-estimators", type=int, default=200)
    parser.add_argument("--max-depth", type=int, default=None)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    seed = seed_everything(args.seed)
    x_train, x_val, y_train, y_val = load(args.dataset, seed)
    if args.model == "glm":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=args.C, max_iter=2000, random_state=seed)
    else:
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(
            n_estimators=args.n_estimators, max_depth=args.max_depth, random_state=seed, n_jobs=1
        )
    model.fit(x_train, y_train)
    scores = model.predict_proba(x_val)
    report(step=0, val_auc=auc(y_val, scores), val_acc=(model.predict(x_val) == y_val).mean())
    save_predictions(y_val, scores)


if __name__ == "__main__":
    main()
