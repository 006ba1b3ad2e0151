"""CLI start-up: wall time of `engine --help`, `engine runs --limit 20` and
`engine show RUN --json` against a warm daemon, beside `python -c pass` and
`python -c "import aiohttp"` in the same run (medians). Goals: `engine --help` under 100 ms
and within 4× of `python -c pass`; `engine runs` within 1.3× of importing aiohttp, which
the client needs and nothing heavier."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_engine, timed
from engine.model import JobSpec


def median_ms(argv: list[str], rounds: int, cwd: Path) -> float:
    timed(argv, cwd=cwd, capture_output=True)  # warm the page cache and .pyc files
    return statistics.median(
        timed(argv, cwd=cwd, capture_output=True) * 1000 for _ in range(rounds)
    )


async def main(rounds: int) -> None:
    async with scratch_engine(max_jobs=1) as (client, root):
        [run] = await client.submit([JobSpec(argv=("true",), cwd=str(root))])
        await client.wait(run.id)
        py, engine = (
            sys.executable,
            [sys.executable, "-m", "engine", "--config", str(root / "hosts.toml")],
        )
        figures = {
            "python -c pass": median_ms([py, "-c", "pass"], rounds, root),
            'python -c "import aiohttp"': median_ms([py, "-c", "import aiohttp"], rounds, root),
            "engine --help": median_ms([*engine, "--help"], rounds, root),
            "engine runs --limit 20": median_ms([*engine, "runs", "--limit", "20"], rounds, root),
            "engine show RUN --json": median_ms(
                [*engine, "show", str(run.id), "--json"], rounds, root
            ),
        }
    for what, ms in figures.items():
        print(f"{what:<28} {ms:7.1f} ms")
    floor, aiohttp = figures["python -c pass"], figures['python -c "import aiohttp"']
    print(
        f"engine --help / python -c pass       {figures['engine --help'] / floor:.2f}× (goal ≤ 4×, < 100 ms)"
    )
    print(
        f"engine runs / import aiohttp         {figures['engine runs --limit 20'] / aiohttp:.2f}× (goal ≤ 1.3×)"
    )
    print(
        f"engine show / import aiohttp         {figures['engine show RUN --json'] / aiohttp:.2f}×"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    asyncio.run(main(parser.parse_args().rounds))
