"""Runs side by side, as `engine compare` prints them and the TUI's compare screen shows them."""

from __future__ import annotations

from typing import Any


def compare(runs: list[Any], details: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs side by side: every param (and whether it differs), each metric's last, min and
    max, and duration, host and status."""
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
    }
