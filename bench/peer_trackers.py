"""Run by bench/ingest.py in its own virtualenv (never the project's): log N points of one
metric to MLflow (`log_batch`, 1,000 a call, to a local SQLite store, MLflow's recommended
backend) or Aim (`Run.track`), and print the seconds until they are all written."""

from __future__ import annotations

import sys
import tempfile
import time


def mlflow_points(folder: str, n: int) -> float:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    client = MlflowClient()
    run = client.create_run(client.create_experiment("bench"))
    started = time.perf_counter()
    now = int(time.time() * 1000)
    for first in range(0, n, 1000):
        steps = range(first, min(n, first + 1000))
        client.log_batch(
            run.info.run_id, metrics=[Metric("loss", 1 / (i + 1), now, i) for i in steps]
        )
    client.set_terminated(run.info.run_id)
    return time.perf_counter() - started


def aim_points(folder: str, n: int) -> float:
    import aim

    run = aim.Run(repo=folder)
    started = time.perf_counter()
    for i in range(n):
        run.track(1 / (i + 1), name="loss", step=i)
    run.close()
    return time.perf_counter() - started


if __name__ == "__main__":
    tracker, points = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="ry-peer-") as scratch:
        logged = {"mlflow": mlflow_points, "aim": aim_points}[tracker](scratch, points)
    print(f"{logged:.3f}")
