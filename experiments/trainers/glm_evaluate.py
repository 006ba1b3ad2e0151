"""Evaluate a model `glm_ablations.py` trained, on its validation rows or the held-out test
set: the evaluation step of experiments/glm_ablations.toml, run after each trained run with
that run's artifact folder."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

from common import auc, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trained", required=True, help="the trained run's artifact folder")
    parser.add_argument("--split", choices=["val", "test"], required=True)
    args = parser.parse_args()

    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import brier_score_loss

    with open(Path(args.trained) / "model.pkl", "rb") as f:
        saved = pickle.load(f)  # our own trained run's file
    x, y = load_breast_cancer(return_X_y=True)
    rows = saved["rows"][args.split]
    scores = saved["model"].predict_proba(x[rows])
    report(
        auc=auc(y[rows], scores),
        acc=(saved["model"].predict(x[rows]) == y[rows]).mean(),
        brier=brier_score_loss(y[rows], scores[:, 1]),
    )


if __name__ == "__main__":
    main()
