"""XGBoost on a bundled dataset: eval metrics every round; on the GPU when one is visible."""

from __future__ import annotations

import argparse
import os

from common import auc, load, report, save_predictions, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--max-depth", type=int, default=5)
    parser.add_argument("--eta", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    seed = seed_everything(args.seed)
    import xgboost as xgb

    x_train, x_val, y_train, y_val = load(args.dataset, seed)
    classes = int(y_train.max()) + 1
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1") and _has_cuda()
    params = {
        "max_depth": args.max_depth,
        "eta": args.eta,
        "seed": seed,
        "device": "cuda" if gpu else "cpu",
        "tree_method": "hist",
        "nthread": 1,
        **(
            {"objective": "multi:softprob", "num_class": classes, "eval_metric": "mlogloss"}
            if classes > 2
            else {"objective": "binary:logistic", "eval_metric": "logloss"}
        ),
    }
    train, val = xgb.DMatrix(x_train, label=y_train), xgb.DMatrix(x_val, label=y_val)

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):  # type: ignore[no-untyped-def]
            scores = model.predict(val)
            loss = evals_log["val"][params["eval_metric"]][-1]
            report(step=epoch, val_loss=loss, val_auc=auc(y_val, scores))
            return False

    booster = xgb.train(
        params, train, args.rounds, evals=[(val, "val")], verbose_eval=False, callbacks=[Report()]
    )
    scores = booster.predict(val)
    save_predictions(y_val, scores)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
