"""What a sweep cost and how it ran, from its runs' times and the hosts' stored samples: each
host's and GPU's utilisation over the sweep's time window, CPU- and GPU-hours per
configuration, and the parallel speedup it reached against its slots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.results.plots import Figures, config_label


def resources(
    runs: Sequence[dict[str, Any]], samples: Sequence[tuple[Any, ...]], slots: int
) -> dict[str, Any] | None:
    """The sweep's cost and parallelism: `runs` are its runs' facts (see
    `Store.sweep_run_facts`), `samples` the host samples (host, time, cpu %, GPUs JSON) in its
    time window, `slots` how many of its runs could run at once. A run's CPU-hours are its
    wall time times the CPUs it reserved (one where it reserved none), its GPU-hours its wall
    time times the GPUs it held. None when no run has started and ended."""
    timed = [r for r in runs if r["started_at"] is not None and r["ended_at"] is not None]
    if not timed:
        return None
    start = min(r["started_at"] for r in timed)
    end = max(r["ended_at"] for r in timed)
    busy = sum(r["ended_at"] - r["started_at"] for r in timed)
    wall = end - start
    configs: dict[str, dict[str, Any]] = {}
    for r in timed:
        hours = (r["ended_at"] - r["started_at"]) / 3600
        label = config_label(r) if r["parent"] is None else f"{config_label(r)} (evaluation)"
        entry = configs.setdefault(
            label, {"config": label, "runs": 0, "hours": 0.0, "cpu_hours": 0.0, "gpu_hours": 0.0}
        )
        entry["runs"] += 1
        entry["hours"] += hours
        entry["cpu_hours"] += hours * max(1.0, r["cpus"])
        entry["gpu_hours"] += hours * r["gpus"]
    hosts: dict[str, dict[str, Any]] = {}
    for host, _, cpu, gpus in samples:
        entry = hosts.setdefault(host, {"cpu": [], "gpus": {}})
        entry["cpu"].append(cpu)
        for g in json.loads(gpus) if isinstance(gpus, str) else gpus:
            entry["gpus"].setdefault(g["index"], []).append(g["util_percent"])
    used = {
        host: {
            "samples": len(h["cpu"]),
            "cpu_mean": sum(h["cpu"]) / len(h["cpu"]),
            "cpu_peak": max(h["cpu"]),
            "gpus": {
                index: {"util_mean": sum(u) / len(u), "util_peak": max(u)}
                for index, u in sorted(h["gpus"].items())
            },
        }
        for host, h in sorted(hosts.items())
    }
    speedup = busy / wall if wall > 0 else float(len(timed))
    return {
        "start": start,
        "end": end,
        "wall_s": wall,
        "run_s": busy,
        "runs": len(timed),
        "speedup": speedup,
        "slots": slots,
        "efficiency": speedup / slots if slots else None,
        "configs": sorted(configs.values(), key=lambda c: -c["hours"]),
        "hosts": used,
    }


def plot_utilisation(
    figures: Figures, samples: Sequence[tuple[Any, ...]], start: float, end: float
) -> None:
    """Each host's CPU and each GPU's utilisation over the sweep's time window."""
    import matplotlib.pyplot as plt

    cpu: dict[str, tuple[list[float], list[float]]] = {}
    gpu: dict[str, tuple[list[float], list[float]]] = {}
    for host, t, percent, gpus in samples:
        xs, ys = cpu.setdefault(host, ([], []))
        xs.append((t - start) / 60)
        ys.append(percent)
        for g in json.loads(gpus) if isinstance(gpus, str) else gpus:
            xs, ys = gpu.setdefault(f"{host} GPU {g['index']}", ([], []))
            xs.append((t - start) / 60)
            ys.append(g["util_percent"])
    if not cpu:
        return
    rows = 2 if gpu else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3 * rows), squeeze=False, sharex=True)
    for ax, series, what in ((axes[0][0], cpu, "CPU"), (axes[-1][0], gpu, "GPU")):
        if not series:
            continue
        for name, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, label=name, linewidth=1)
        ax.set_ylabel(f"{what} utilisation %")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1][0].set_xlabel("minutes since the sweep's first run started")
    minutes = (end - start) / 60
    figures.save(
        fig,
        "utilisation",
        f"Utilisation of each host's CPUs{' and GPUs' if gpu else ''} over the sweep's"
        f" {minutes:.1f} minutes, from the samples the daemon stored.",
    )
