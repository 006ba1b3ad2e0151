"""Dispatch: 200 runs of `python -c pass` through the engine with 2 concurrent slots, against
`xargs -P 2` running the same commands, in the same run. Rounds alternate between the two and
the medians are compared. Goal (issue 18): at most 1.1× xargs' wall time."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import each, scratch_engine, timed
from engine.model import JobSpec
from engine.protocol import RunChanged


async def main(runs: int, slots: int, rounds: int) -> None:
    commands = ("pass\n" * runs).encode()
    xargs_times, engine_times, cpu_per_run = [], [], []
    async with scratch_engine(max_jobs=slots) as (client, root):
        daemon = psutil.Process((await client.status()).pid)
        spec = JobSpec(argv=(sys.executable, "-c", "pass"), cwd=str(root))
        for _ in range(rounds):
            xargs_times.append(
                timed(
                    ["xargs", "-P", str(slots), "-I{}", sys.executable, "-c", "{}"],
                    input=commands,
                    stdout=subprocess.DEVNULL,
                )
            )
            stream = client.events()
            await anext(stream)  # the empty first batch: subscribed
            cpu = daemon.cpu_times()
            start = time.perf_counter()
            ids = {run.id for run in await client.submit([spec] * runs)}
            async for batch in stream:  # the end of each run, as the TUI sees it
                for event in batch:
                    if isinstance(event, RunChanged) and event.run.status.terminal:
                        assert event.run.status == "succeeded", event.run
                        ids.discard(event.run.id)
                if not ids:
                    break
            engine_times.append(time.perf_counter() - start)
            await stream.aclose()
            used = daemon.cpu_times()
            cpu_per_run.append((used.user + used.system - cpu.user - cpu.system) / runs)
    xargs, engine = statistics.median(xargs_times), statistics.median(engine_times)
    print(f"runs                          {runs} with {slots} slots, {rounds} rounds (medians)")
    print(f"xargs -P {slots}                     {xargs:6.2f} s  ({each(xargs_times)})")
    print(f"engine                        {engine:6.2f} s  ({each(engine_times)})")
    print(f"daemon CPU per run            {statistics.median(cpu_per_run) * 1000:6.1f} ms")
    print(f"ratio engine / xargs          {engine / xargs:.2f}× (goal ≤ 1.1×)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.slots, args.rounds))
