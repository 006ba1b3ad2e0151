"""Results at scale: a store of 100,000 finished runs and 10,000,000 metric points, queried
through the real daemon: `engine best` over the whole sweep (10 configurations × 10,000 seeds)
and a filtered, sorted window of runs. The floor is the same best computed from the raw points
(what a store without per-run summaries does), in the same store. Medians and 95th
percentiles; goal: p95 under 20 ms each."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import engine_in, percentile, spread
from engine.store import Store
from tests.conftest import fill_store

QUERIES = ("failed", "auc>0.9", "host:local auc>0.8", "run-0001")


async def timed(call, rounds: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


async def main(runs: int, steps: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        fill_store(root / "runs", runs, steps)
        filled = time.perf_counter() - started
        store = Store(root / "runs" / "store.duckdb")
        points = store.con.execute("SELECT count(*) FROM metrics").fetchone()[0]
        raw = []
        for _ in range(rounds):
            start = time.perf_counter()
            store.con.execute(
                "SELECT r.params, max(m.value) FROM runs r JOIN metrics m ON m.run_id = r.id"
                " AND m.key = 'auc' WHERE r.sweep = 'big-1' AND r.status = 'succeeded'"
                " GROUP BY r.id, r.params"
            ).fetchall()
            raw.append(time.perf_counter() - start)
        store.close()
        hosts = '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\n'
        async with engine_in(root, hosts) as client:
            best = await timed(lambda: client.best("big-1"), rounds)
            pages = {
                q: await timed(lambda q=q: client.runs_page(q, "metric:auc", True, 0, 100), rounds)
                for q in QUERIES
            }
    print(f"{runs:,} runs, {points:,} metric points (filled in {filled:.0f} s); goals: p95 < 20 ms")
    print(spread("engine best", best))
    print(spread("best from raw points", raw))
    ratio = statistics.median(best) / statistics.median(raw)
    print(f"  engine best / the same from the raw points: {ratio:.2f}× (medians)")
    for q, times in pages.items():
        print(spread(f"top 100 where {q}", times))
    worst = max(percentile(t, 0.95) for t in [best, *pages.values()])
    print(f"  slowest p95 {worst * 1000:.1f} ms (goal < 20 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50, help="points per run and key (2 keys)")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.steps, args.rounds))
