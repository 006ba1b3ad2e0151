"""Host sampling cost: CPU time of one full sample of this machine (per-core CPU, memory, every
GPU through NVML), as a share of one core at the default 1 Hz, against the floor of psutil's
per-core CPU reading alone, in the same run. Goal: well under 1% of a core."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.telemetry import LocalSampler

N = 500


def cpu_per_call(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    for _ in range(N):
        fn()
    return (time.process_time() - start) / N


def main() -> None:
    sampler = LocalSampler("local")
    full = cpu_per_call(sampler.sample)
    floor = cpu_per_call(lambda: psutil.cpu_percent(percpu=True))
    gpus = sampler.sample().gpu_error or f"{len(sampler.sample().gpus)} GPU(s)"
    print(f"full sample ({gpus})  {full * 1e3:.3f} ms CPU = {full * 100:.3f}% of a core at 1 Hz")
    print(f"floor: psutil per-core CPU  {floor * 1e3:.3f} ms CPU")
    print(f"ratio sample / floor        {full / floor:.1f}×")


if __name__ == "__main__":
    main()
