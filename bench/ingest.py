"""Ingestion: one job prints 1,000,000 `@runyard` marker lines; how long until every point is
queryable in the store. Compared in the same run with the floor (the same job writing the same
lines to a file, no engine; goal: within 1.5×, and at least 1,000,000 points/s) and with the
trackers users would otherwise pick, on the same points: MLflow (`log_batch` into SQLite) and
Aim (`Run.track`), installed by this benchmark into their own virtualenv (.venv-peers), never
into the project's. `--no-peers` leaves them out."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import each, env, scratch_engine, timed
from engine.client import Client
from engine.model import JobSpec

JOB = """
import sys
n = int(sys.argv[1])
out = sys.stdout
chunk = 10_000
for start in range(0, n, chunk):
    out.write("".join(f'@runyard {{"step": {i}, "loss": {1.0 / (i + 1):.6f}}}\\n' for i in range(start, min(n, start + chunk))))
out.flush()
"""


PEERS = ("mlflow-skinny>=2.10", "sqlalchemy>=2", "alembic>=1.12", "aim>=3.17")
PEERS_VENV = Path(__file__).resolve().parent.parent / ".venv-peers"


def peers_python() -> Path:
    """The Python of the peers' own virtualenv, made and filled the first time."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
        stamp.touch()
    return python


def peer_seconds(python: Path, tracker: str, points: int) -> float:
    script = Path(__file__).with_name("peer_trackers.py")
    out = subprocess.run(
        [str(python), str(script), tracker, str(points)], check=True, capture_output=True, text=True
    ).stdout
    return float(out.split()[-1])


async def launch_to_queryable(client: Client, job: Path, lines: int) -> float:
    """Seconds from submitting the printing job to all its points being queryable."""
    start = time.perf_counter()
    [run] = await client.submit(
        [JobSpec(argv=(sys.executable, str(job), str(lines)), cwd=str(job.parent), env=env())]
    )
    # A run is finalised only after its last points are committed: ended means queryable.
    await client.wait(run.id)
    seconds = time.perf_counter() - start
    detail = await client.run(run.id)
    stored = sum(m["count"] for m in detail.details["metrics"])
    if stored != lines:
        raise SystemExit(f"run {run.id} stored {stored:,} points of the {lines:,} printed")
    return seconds


async def main(lines: int, peers: bool, rounds: int) -> None:
    async with scratch_engine(max_jobs=1) as (client, root):
        job = root / "printer.py"
        job.write_text(JOB)
        with open(os.devnull, "w") as sink:
            floor = timed([sys.executable, str(job), str(lines)], stdout=sink)
        # A daemon's first run of an interpreter also asks it for its packages (cached after).
        first = await launch_to_queryable(client, job, lines)
        floors, engines = [], []
        for _ in range(rounds):  # in turns, so that the machine's changing speed hits both
            with open(root / "floor.log", "w") as sink:
                floors.append(timed([sys.executable, str(job), str(lines)], stdout=sink))
            engines.append(await launch_to_queryable(client, job, lines))
    floor_file, engine = statistics.median(floors), statistics.median(engines)
    rate = lines / engine
    print(f"lines printed                 {lines:,} a run, every point stored once (checked)")
    print(f"floor: job alone, to /dev/null {floor:6.2f} s")
    print(
        f"floor: job alone, to a file    {floor_file:6.2f} s  (median of {rounds}: {each(floors)})"
    )
    print(f"engine: launch → all queryable {engine:6.2f} s  (median of {rounds}: {each(engines)})")
    print(f"engine: a daemon's first run   {first:6.2f} s  (it also probes the interpreter)")
    print(f"throughput                    {rate:,.0f} points/s (goal ≥ 1,000,000)")
    print(f"ratio engine / job-to-file    {engine / floor_file:.2f}× (goal ≤ 1.5×)")
    if not peers:
        return
    python = peers_python()
    for tracker in ("mlflow", "aim"):
        seconds = peer_seconds(python, tracker, lines)
        print(
            f"{tracker + ':':<7} the same points      {seconds:6.2f} s  ({lines / seconds:,.0f} points/s;"
            f" engine is {seconds / engine:.1f}× faster)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="engine and floor runs, in turns")
    parser.add_argument("--no-peers", dest="peers", action="store_false")
    args = parser.parse_args()
    asyncio.run(main(args.lines, args.peers, args.rounds))
