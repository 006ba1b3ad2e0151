"""A long run's charts: one run of 100,000 steps printing 3 metrics (300,000 points), opened in
the real TUI against a real daemon. Measured: the points fetched for the chart and the time
from enter to the run screen drawn, then `m` (the chart redrawn for the next metric). The peer
is the same screen given every point, as it was before the daemon thinned curves for a chart.
Goal: the run screen in under 1 s."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_engine
from engine.model import JobSpec
from tui.app import RunyardApp
from tui.screens import RunDetailScreen
from tui.widgets import CHART_POINTS, RunsTable

TRAINER = (
    "import json, sys\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print('@runyard ' + json.dumps({'step': i, 'loss': 1 / (i + 1), 'acc': i % 97 / 97,"
    " 'lr': 0.1}))\n"
)


async def frame(pilot) -> float:  # type: ignore[no-untyped-def]
    """Seconds until the app has drawn what is pending."""
    start = time.perf_counter()
    await pilot.pause()
    return time.perf_counter() - start


async def main(steps: int, rounds: int) -> None:
    async with scratch_engine(max_jobs=1) as (client, folder):
        argv = (sys.executable, "-c", TRAINER, str(steps))
        [run] = await client.submit([JobSpec(argv=argv, cwd=str(folder), name="long")])
        await client.wait(run.id, 600)
        start = time.perf_counter()
        every = await client.metrics(run.id)
        fetch_all = time.perf_counter() - start
        start = time.perf_counter()
        thinned = await client.metrics(run.id, max_points=CHART_POINTS)
        fetch_thinned = time.perf_counter() - start

        app = RunyardApp(str(folder / "hosts.toml"))
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.query_one(RunsTable)
            while table.window.cursor_run != run.id:
                await asyncio.sleep(0.01)
            start = time.perf_counter()
            await pilot.press("enter")
            screen = app.screen
            assert isinstance(screen, RunDetailScreen)
            while not screen.series:
                await asyncio.sleep(0.005)
            await pilot.pause()
            opened = time.perf_counter() - start
            thin_m = []
            for _ in range(rounds):
                screen.action_next_metric()
                thin_m.append(await frame(pilot))
            start = time.perf_counter()
            screen.show_points(every)  # the peer: every point on the chart
            await pilot.pause()
            opened_all = fetch_all + (time.perf_counter() - start)
            all_m = []
            for _ in range(rounds):
                screen.action_next_metric()
                all_m.append(await frame(pilot))

    print(f"one run, {steps:,} steps × 3 metrics ({len(every):,} points):")
    print(
        f"  points for the chart   {len(thinned):>7,} in {fetch_thinned * 1000:5.0f} ms"
        f"   every point {len(every):>7,} in {fetch_all * 1000:5.0f} ms"
    )
    print(
        f"  enter → run screen drawn   {opened * 1000:5.0f} ms   (goal < 1000 ms)"
        f"   with every point {opened_all * 1000:5.0f} ms (fetch and draw)"
        f"   ratio {opened_all / opened:.1f}×"
    )
    thin_med, all_med = statistics.median(thin_m), statistics.median(all_m)
    print(
        f"  m (next metric), median of {rounds}   {thin_med * 1000:5.0f} ms"
        f"   with every point {all_med * 1000:5.0f} ms   ratio {all_med / thin_med:.1f}×"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.rounds))
