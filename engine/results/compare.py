"""Runs side by side, as `engine compare` prints them and the TUI's compare screen shows them."""

from __future__ import annotations

from typing import Any


def compare(
    runs: list[Any], details: list[dict[str, Any]], baseline: int | None = None
) -> dict[str, Any]:
    """Runs side by side: every param (and whether it differs), each metric's last, min and
    max, and duration, host and status. With a `baseline` (a run id among them), that run
    comes first and each other run's metrics get `delta`, its last minus the baseline's."""
    if baseline is not None:
        order = sorted(range(len(runs)), key=lambda i: runs[i].id != baseline)
        runs, details = [runs[i] for i in order], [details[i] for i in order]
    names = sorted({k for run in runs for k in run.params})
    params = [
        {
            "name": name,
            "values": [run.params.get(name) for run in runs],
            "differs": len({repr(run.params.get(name)) for run in runs}) > 1,
        }
        for name in names
    ]
    keys = sorted({m["key"] for d in details for m in d.get("metrics", [])})
    metrics = []
    for key in keys:
        per_run = []
        for d in details:
            found = next((m for m in d.get("metrics", []) if m["key"] == key), None)
            per_run.append(
                {k: found[k] for k in ("last", "min", "max", "count")} if found else None
            )
        if baseline is not None and per_run and runs[0].id == baseline:
            base = per_run[0]["last"] if per_run[0] else None
            for i, found in enumerate(per_run[1:], start=1):
                if found is not None:
                    has = base is not None and found["last"] is not None
                    per_run[i] = found | {"delta": found["last"] - base if has else None}
        metrics.append({"key": key, "runs": per_run})
    return {
        "runs": [
            {
                "id": run.id,
                "name": run.name,
                "status": str(run.status),
                "host": run.host,
                "seed": run.seed,
                "duration_s": run.elapsed(),
            }
            for run in runs
        ],
        "params": params,
        "metrics": metrics,
        "baseline": baseline,
    }
