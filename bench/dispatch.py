"""Dispatch: 200 runs of `python -c pass` through the engine with 2 concurrent slots, against
`xargs -P 2` running the same commands, in the same run. Goal: at most 1.3× xargs' wall time."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import env, scratch_engine, timed
from engine.model import JobSpec


async def main(runs: int, slots: int) -> None:
    commands = "\n".join(["pass"] * runs) + "\n"
    xargs = timed(
        ["xargs", "-P", str(slots), "-I{}", sys.executable, "-c", "{}"],
        input=commands.encode(),
        stdout=subprocess.DEVNULL,
    )
    async with scratch_engine(max_jobs=slots) as (client, root):
        spec = JobSpec(argv=(sys.executable, "-c", "pass"), cwd=str(root), env=env())
        start = time.perf_counter()
        submitted = await client.submit([spec] * runs)
        last = await client.wait(submitted[-1].id)
        while not all(r.status.terminal for r in await client.runs(limit=runs)):
            await asyncio.sleep(0.01)
        engine = time.perf_counter() - start
        ok = sum(r.status == "succeeded" for r in await client.runs(limit=runs))
    print(
        f"runs                          {runs} with {slots} slots ({ok} succeeded, last: {last.status})"
    )
    print(f"xargs -P {slots}                     {xargs:6.2f} s")
    print(f"engine                        {engine:6.2f} s")
    print(f"ratio engine / xargs          {engine / xargs:.2f}× (goal ≤ 1.3×)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.slots))
