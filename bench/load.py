"""The daemon under load, with issue 18's goals; exits non-zero when one is missed.

`queue`: 10,000 trivial jobs accepted in one submission (goal < 1 s) while dispatch is held,
`engine queue` at 10,000 queued, then drained on 2 slots against `xargs -P 2` on the same
commands in the same run (goal ≤ 1.5×); daemon CPU per run at 100, 1,000 and 10,000 queued (goal:
flat, the largest within 1.5× of the smallest); daemon RSS with 10,000 queued, right after
accepting them and once settled (goal < 300 MB).

`many`: 50 runs × 1,000 marker lines/s, then 200 runs × 100 lines/s. Each line carries the time
it was printed; a poller reads runs (`show`, `runs`, `queue`) as clients would and takes, for each
`show`, how old the newest stored point is (goal: p99 < 1 s), and each read's latency (goal: p99 <
100 ms). Meanwhile a TUI in its own process has its cursor moved (goal: key-to-frame p95 < 100
ms), and the daemon's RSS is sampled (goal < 300 MB).

`idle`: the daemon's RSS with 100,000 ended runs in its store, after it has settled (goal: <
150 MB)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import engine_in, percentile, scratch_engine, spread, timed
from engine.client import Client
from engine.executors.local import WRAPPER
from engine.model import JobSpec, RunStatus

CHATTY = """
import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
per = max(1, rate // 100)  # lines per write: one write every 10 ms
start = time.time()
for i in range(0, int(rate * seconds), per):
    time.sleep(max(0.0, start + i / rate - time.time()))
    now = time.time()
    sys.stdout.write("".join(f'@runyard {{"step": {i + k}, "t": {now:.4f}}}\\n' for k in range(per)))
    sys.stdout.flush()
"""

MB = 2**20
READS_PER_S = 25


@dataclass
class Goals:
    """Each goal checked, as (what, figure, goal, met)."""

    checked: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def exact(self, what: str, got: int, expected: int) -> None:
        met = got == expected
        self.checked.append((what, f"{got:,}", f"= {expected:,}", met))
        mark = "ok  " if met else "MISS"
        print(f"  {mark} {what:<46} {got:,}  (goal = {expected:,})")

    def check(self, what: str, value: float, limit: float, unit: str, fmt: str = ".0f") -> None:
        met = value <= limit
        self.checked.append((what, f"{value:{fmt}} {unit}", f"≤ {limit:{fmt}} {unit}", met))
        mark = "ok  " if met else "MISS"
        print(f"  {mark} {what:<46} {value:{fmt}} {unit}  (goal ≤ {limit:{fmt}} {unit})")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


async def drain(client: Client, ids: set[int]) -> None:
    """Return when every run of `ids` has ended; each must have succeeded. It waits on the
    runs (the daemon's long-poll), the last queued first, as `engine wait` does: a client
    taking every run's events would cost the daemon more than the drain it measures."""
    pending = set(ids)
    unfinished = [s for s in RunStatus if not s.terminal]
    while pending:
        await client.wait(max(pending))
        pending &= {run.id for run in await client.runs(statuses=unfinished)}
    query = (
        f"SELECT id, status, reason FROM runs_v WHERE id BETWEEN {min(ids)} AND {max(ids)}"
        " AND status <> 'succeeded'"
    )
    failed = [row for row in (await client.sql(query))["rows"] if row[0] in ids]
    assert not failed, failed


async def settled_rss(daemon: psutil.Process, most_s: float = 20.0) -> float:
    """The daemon's RSS in MB once it stops falling (a second's samples within 2 MB): what it
    holds, not what a burst of work left for its allocators to give back."""
    deadline = time.monotonic() + most_s
    last = daemon.memory_info().rss / MB
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = daemon.memory_info().rss / MB
        if last - now < 2:
            return now
        last = now
    return last


async def queue_scale(goals: Goals, sizes: list[int], slots: int) -> None:
    print(f"queue scale, {slots} slots ({load()})")
    async with scratch_engine(max_jobs=slots) as (client, root):
        daemon = psutil.Process((await client.status()).pid)
        spec = JobSpec(argv=("true",), cwd=str(root))
        per_run = {}
        for size in sizes:
            await client.set_host("local", enabled=False, reason="bench: held while queueing")
            started = time.perf_counter()
            ids = {run.id for run in await client.submit([spec] * size)}
            first = min(ids)
            accepted = time.perf_counter() - started
            if size == sizes[-1]:
                goals.check(f"accept {size:,} in one submission", accepted * 1000, 1000, "ms")
                config = root / "hosts.toml"
                engine = [sys.executable, "-m", "engine", "--config", str(config)]
                shown = timed([*engine, "queue"], stdout=subprocess.DEVNULL)
                goals.check(f"`engine queue` at {size:,} queued", shown * 1000, 1000, "ms")
                listed = subprocess.run(
                    [*engine, "queue", "--json"], capture_output=True, check=True
                ).stdout
                print(f"       `engine queue --json` prints {len(listed) / 1024:.0f} KB")
                peak = daemon.memory_info().rss / MB
                settled = await settled_rss(daemon)
                print(f"       daemon RSS right after accepting {peak:.0f} MB")
                goals.check(f"daemon RSS with {size:,} queued, settled", settled, 300, "MB")
                xargs = timed(
                    ["xargs", "-P", str(slots), "-n", "1", "true"],
                    input=b"x\n" * size,
                    stdout=subprocess.DEVNULL,
                )
                recorded = wrapper_floor(root, size, slots)
                print(
                    f"       xargs -P {slots} over the run wrapper, folders made beforehand:"
                    f" {recorded:.2f} s ({recorded / xargs:.2f}× bare xargs); a new file or"
                    f" folder here costs {entry_cost(root) * 1e6:.0f} µs"
                )
            cpu = daemon.cpu_times()
            started = time.perf_counter()
            await client.set_host("local", enabled=True)
            await drain(client, ids)
            drained = time.perf_counter() - started
            used = daemon.cpu_times()
            per_run[size] = (used.user + used.system - cpu.user - cpu.system) / size
            print(
                f"       {size:>6,} queued: drained in {drained:6.2f} s, daemon CPU"
                f" {per_run[size] * 1000:.2f} ms per run ({load()})"
            )
        goals.check(
            f"drain {sizes[-1]:,}: engine / xargs -P {slots} ({xargs:.2f} s)",
            drained / xargs,
            1.5,
            "×",
            ".2f",
        )
        print(f"       engine / xargs over the wrapper: {drained / recorded:.2f}×")
        turns, runs = await turnarounds(client, slots, first)
        print(
            f"       a slot's turn from one run's end to the next one's start: median"
            f" {statistics.median(turns) * 1000:.2f} ms, p90 {percentile(turns, 0.9) * 1000:.2f} ms;"
            f" a run itself (start to exit code): median {statistics.median(runs) * 1000:.2f} ms"
        )
        flat = per_run[sizes[-1]] / per_run[sizes[0]]
        goals.check(f"CPU per run at {sizes[-1]:,} / at {sizes[0]:,}", flat, 1.5, "×", ".2f")


async def turnarounds(client: Client, slots: int, first: int) -> tuple[list[float], list[float]]:
    """From the store, over the runs from id `first` on: for each start after the first
    `slots`, the seconds since the end whose slot it took (the daemon's turn), and each run's
    own seconds from its start to its exit code."""
    query = f"SELECT started_at, ended_at FROM runs_v WHERE id >= {int(first)}"
    rows = (await client.sql(query))["rows"]
    starts = sorted(start for start, _ in rows)
    ends = sorted(end for _, end in rows)
    turns = [start - end for start, end in zip(starts[slots:], ends, strict=False)]
    return turns, [end - start for start, end in rows]


def wrapper_floor(root: Path, size: int, slots: int) -> float:
    """Seconds for `xargs -P slots` to run `true` `size` times through the run wrapper, each in
    an attempt folder made beforehand: the record a run leaves (a shell, `pid`, `output.log`,
    `exit_code`) without the daemon, which also makes four folders per run."""
    floor = root / "wrapper-floor"
    folders = [floor / str(i) for i in range(size)]
    for folder in folders:
        folder.mkdir(parents=True)
    try:
        wrapped = ["sh", str(WRAPPER), "{}", "--cd", str(root), "--", "true"]
        return timed(
            ["xargs", "-P", str(slots), "-I{}", *wrapped],
            input="".join(f"{folder}\n" for folder in folders).encode(),
            stdout=subprocess.DEVNULL,
        )
    finally:
        shutil.rmtree(floor)


def entry_cost(root: Path, count: int = 500) -> float:
    """Seconds to make a folder and a file in it, per entry, where the benchmark keeps its runs:
    a run makes seven, and on some disks they cost more than the command itself."""
    where = root / "entries"
    where.mkdir()
    started = time.perf_counter()
    for i in range(count):
        os.mkdir(where / str(i))
        (where / str(i) / "f").touch()
    spent = time.perf_counter() - started
    shutil.rmtree(where)
    return spent / (2 * count)


@dataclass
class Reads:
    """What the poller saw: each read's latency, and how old the newest point was at each `show`."""

    latency: dict[str, list[float]] = field(
        default_factory=lambda: {"show": [], "runs": [], "queue": []}
    )
    staleness: list[float] = field(default_factory=list)


async def timed_read(reads: Reads, kind: str, read: Callable[[], Awaitable[object]]) -> object:
    started = time.perf_counter()
    result = await read()
    reads.latency[kind].append(time.perf_counter() - started)
    return result


async def poll(client: Client, ids: list[int], seconds: float, reads: Reads) -> None:
    """Read as clients do until the runs stop printing: `show` round-robin, with `runs` and
    `queue` every fifth read; `READS_PER_S` in all, as a few busy clients would (a poller
    asking as fast as it can would be the heaviest load on the machine)."""
    ends: dict[int, float] = {}
    i = 0
    while not ends or time.time() < max(ends.values()):
        await asyncio.sleep(1 / READS_PER_S)
        run_id = ids[i % len(ids)]
        i += 1
        asked = time.time()
        detail = await timed_read(reads, "show", lambda run_id=run_id: client.run(run_id))
        run = detail.run  # type: ignore[attr-defined]
        if run.started_at is not None:
            ends[run_id] = run.started_at + seconds
        last = {m["key"]: m["last"] for m in detail.details["metrics"]}  # type: ignore[attr-defined]
        if "t" in last and asked < ends.get(run_id, 0) - 0.05:  # still printing
            reads.staleness.append(max(0.0, asked - last["t"]))
        if i % 5 == 0:
            await timed_read(reads, "runs", lambda: client.runs(limit=100))
            await timed_read(reads, "queue", lambda: client.queue(limit=50))


async def many_runs(
    goals: Goals, runs: int, rate: int, seconds: float, presses: int, parked: int
) -> None:
    print(f"{runs} runs × {rate:,} lines/s for {seconds:.0f} s, {parked:,} queued ({load()})")
    hosts = (
        f'[hosts.local]\nkind = "local"\nmax_jobs = {runs}\n'
        '[hosts.parked]\nkind = "local"\nmax_jobs = 1\n'
    )
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        async with engine_in(Path(folder), hosts) as client:
            await _many_runs(goals, client, Path(folder), runs, rate, seconds, presses, parked)


async def _many_runs(
    goals: Goals,
    client: Client,
    root: Path,
    runs: int,
    rate: int,
    seconds: float,
    presses: int,
    parked: int,
) -> None:
    daemon = psutil.Process((await client.status()).pid)
    if parked:  # queued all along on a host held by the user: what a big sweep leaves waiting
        await client.submit([JobSpec(argv=("true",), cwd=str(root), host="parked")] * parked)
        await client.set_host("parked", enabled=False, reason="bench: held")  # (a few ran)
    job = root / "chatty.py"
    job.write_text(CHATTY)
    argv = (sys.executable, str(job), str(rate), str(seconds))
    spec = JobSpec(argv=argv, cwd=str(root), host="local")
    cpu = daemon.cpu_times()
    started = time.perf_counter()
    ids = [run.id for run in await client.submit([spec] * runs)]
    reads = Reads()
    rss: list[float] = []

    async def sample_rss() -> None:
        while True:
            rss.append(daemon.memory_info().rss / MB)
            await asyncio.sleep(0.5)

    printing = "SELECT count(DISTINCT run_id) FROM metrics_v"
    while (await client.sql(printing))["rows"][0][0] < runs:
        await asyncio.sleep(0.2)  # measured once every run is printing: the steady state
    sampler = asyncio.create_task(sample_rss())
    tui = await asyncio.create_subprocess_exec(  # in its own session, as a terminal's
        sys.executable,
        __file__,
        "tui-probe",
        str(root / "hosts.toml"),
        str(presses),
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    await poll(client, ids, seconds, reads)
    out, _ = await tui.communicate()
    await drain(client, set(ids))
    wall = time.perf_counter() - started
    sampler.cancel()
    used = daemon.cpu_times()
    details = [await client.run(i) for i in ids]
    printed = sum(m["count"] for d in details for m in d.details["metrics"] if m["key"] == "t")
    probe = json.loads(out)
    core = (used.user + used.system - cpu.user - cpu.system) / wall
    print(f"       {printed:,} points stored; daemon used {core * 100:.0f} % of a core ({load()})")
    for kind, times in reads.latency.items():
        print(spread(f"API {kind}", times))
    print(spread("newest point's age", reads.staleness))
    print(spread("TUI key → frame", probe["presses"]))
    print(f"       TUI first screen {probe['first_screen'] * 1000:.0f} ms")
    goals.exact(f"{runs}×{rate}: points stored", printed, runs * int(rate * seconds))
    goals.check(
        f"{runs}×{rate}: newest point's age p99", percentile(reads.staleness, 0.99), 1, "s", ".2f"
    )
    for kind, times in reads.latency.items():
        goals.check(f"{runs}×{rate}: API {kind} p99", percentile(times, 0.99) * 1000, 100, "ms")
    goals.check(
        f"{runs}×{rate}: TUI key → frame p95", percentile(probe["presses"], 0.95) * 1000, 100, "ms"
    )
    goals.check(f"{runs}×{rate}, {parked:,} queued: daemon RSS, most", max(rss), 300, "MB")


async def idle(goals: Goals, runs: int) -> None:
    from tests.conftest import fill_store

    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        root = Path(folder)
        fill_store(root / "runs", runs)
        hosts = '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\n'
        async with engine_in(root, hosts) as client:
            daemon = psutil.Process((await client.status()).pid)
            await client.runs(limit=100)
            await client.queue()
            await asyncio.sleep(2)  # settled: samples taken, first reads served
            print(f"idle with {runs:,} runs in the store ({load()})")
            goals.check(
                f"daemon RSS idle, {runs:,} runs stored", daemon.memory_info().rss / MB, 150, "MB"
            )


async def tui_probe(config: str, presses: int) -> None:
    """In its own process: open the TUI on the loaded daemon, then time cursor moves from the
    key to the frame that shows them; prints JSON."""
    from bench.tui import count_frames, key_to_frame, until
    from tui.app import RunyardApp
    from tui.widgets import RunsTable

    count_frames()
    app = RunyardApp(config)
    opened = time.perf_counter()
    times = []
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await until(lambda: table.row_count > 1)
        first_screen = time.perf_counter() - opened
        for i in range(presses):
            row = table.window.cursor
            key, step = ("down", 1) if i % 2 == 0 else ("up", -1)
            times.append(
                await key_to_frame(app, key, lambda row=row, s=step: table.window.cursor == row + s)
            )
            await asyncio.sleep(0.05)  # a person's pace, not a flood
        await pilot.press("q")
    print(json.dumps({"first_screen": first_screen, "presses": times}))


async def main(args: argparse.Namespace) -> int:
    goals = Goals()
    print(load())
    if "queue" in args.scenarios:
        await queue_scale(goals, args.sizes, args.slots)
    if "many" in args.scenarios:
        for shape in args.shapes:
            runs, rate = (int(n) for n in shape.split("x"))
            await many_runs(goals, runs, rate, args.seconds, args.presses, args.parked)
    if "idle" in args.scenarios:
        await idle(goals, args.stored)
    missed = [c for c in goals.checked if not c[3]]
    print(f"{len(goals.checked) - len(missed)} of {len(goals.checked)} goals met ({load()})")
    return 1 if missed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["tui-probe"]:
        asyncio.run(tui_probe(sys.argv[2], int(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=["queue", "many", "idle"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=["50x1000", "200x100"], help="RUNSxRATE")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--parked", type=int, default=10_000, help="runs queued meanwhile")
    parser.add_argument("--stored", type=int, default=100_000)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(parser.parse_args())))
