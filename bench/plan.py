"""plan() at scale: 10,000 queued jobs (GPU jobs of several sizes, CPU jobs, routed and pinned
ones) on 10 hosts with 8 GPUs each, some GPUs part-used. Time per plan, against the floor of
sorting the queue by priority (what any planner must do), in the same run. Goal: under 20 ms."""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import Route
from engine.core.scheduler import GpuState, HostCapacity, QueuedJob, Snapshot, plan
from engine.model import Resources

GB = 1024.0


def snapshot(jobs: int, hosts: int, gpus: int, seed: int = 0) -> Snapshot:
    rng = random.Random(seed)
    host_states = tuple(
        HostCapacity(
            name=f"node{h}",
            state="up",
            max_jobs=16,
            active=rng.randint(0, 8),
            tags=("cuda", "big") if h % 2 else ("cuda",),
            cpus=64,
            mem_gb=512,
            reserved_cpus=rng.randint(0, 32),
            gpus=tuple(
                GpuState(
                    i, 80 * GB, rng.choice([80, 60, 20, 5]) * GB, rng.choice([0, 0, 10, 40]) * GB
                )
                for i in range(gpus)
            ),
        )
        for h in range(hosts)
    )
    shapes = [
        Resources(gpus=1, gpu_mem_gb=6),
        Resources(gpus=1, gpu_mem_gb=20),
        Resources(gpus=2, gpu_mem_gb=40),
        Resources(gpus=1),
        Resources(cpus=4, mem_gb=16),
    ]
    queue = tuple(
        QueuedJob(
            run_id=i,
            queued_at=rng.uniform(0, 1000),
            priority=rng.choice([0, 0, 0, 1, 5]),
            resources=rng.choice(shapes),
            requires=rng.choice([(), (), ("big",)]),
            model_type=rng.choice([None, "XGBoost", "MLP"]),
            sweep=f"sweep{i % 20}",
            max_concurrent=8,
            requested_host=f"node{rng.randrange(hosts)}" if rng.random() < 0.05 else None,
        )
        for i in range(jobs)
    )
    routes = (
        Route(
            model_type="XGBoost",
            tags=(),
            prefer=("node1", "node3"),
            fallback=("node0",),
            fallback_after_s=600,
        ),
    )
    return Snapshot(now=1000.0, hosts=host_states, queue=queue, routes=routes)


def main() -> None:
    snap = snapshot(10_000, 10, 8)
    times, floors = [], []
    for _ in range(20):
        start = time.perf_counter()
        result = plan(snap)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        sorted(snap.queue, key=lambda j: (-j.priority, j.run_id))
        floors.append(time.perf_counter() - start)
    median, floor = statistics.median(times), statistics.median(floors)
    print(
        f"queue {len(snap.queue):,} jobs, {len(snap.hosts)} hosts × {len(snap.hosts[0].gpus)} GPUs"
    )
    print(f"assigned {len(result.assignments)}, waiting {len(result.waiting):,}")
    print(
        f"plan()            median {median * 1000:6.2f} ms  (max {max(times) * 1000:.2f} ms; goal < 20 ms)"
    )
    print(f"floor: sort queue median {floor * 1000:6.2f} ms")
    print(f"ratio plan / sort {median / floor:.1f}×")


if __name__ == "__main__":
    main()
