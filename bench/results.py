"""Results at scale: a store of 100,000 finished runs and 10,000,000 metric points, queried
through the real daemon: `engine best` over the whole sweep (10 configurations × 10,000 seeds)
and a filtered, sorted window of runs. The floor is the same best computed from the raw points
(what a store without per-run summaries does), in the same store. Goal: under 50 ms each."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import engine_in
from engine.store import Store
from tests.conftest import fill_store

QUERIES = ("failed", "auc>0.9", "host:local auc>0.8", "run-0001")


async def timed(call, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    print(
        f"{runs:,} runs, {points:,} metric points (filled in {filled:.0f} s); medians of {rounds}:"
    )
    print(f"  engine best (through the daemon)        {best * 1000:6.1f} ms   (goal < 50 ms)")
    floor = statistics.median(raw)
    print(
        f"  the same best from the raw points       {floor * 1000:6.1f} ms   ratio {best / floor:.2f}×"
    )
    for q, t in pages.items():
        print(f"  top 100 by auc where {q!r:<16} {t * 1000:6.1f} ms   (goal < 50 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50, help="points per run and key (2 keys)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.steps, args.rounds))
