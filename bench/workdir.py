"""A run's own work directory: how long the run wrapper takes to make one from the read-only
snapshot of a 5,000-file project (a copy, `cp -R -p`, which clones where the file system can),
against a tar pipe, hard links (`cp -al`, fast but shares every file with
the snapshot: a run that rewrites a file in place would change it for every run) and Python's
`shutil.copytree`, with the bare wrapper start (no work directory) as the floor. Medians of
alternating rounds."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.executors.base import wrapper_args
from engine.executors.local import WRAPPER
from engine.repro import take_snapshot


def make_project(root: Path, files: int) -> None:
    """A research repository's shape: many small source and config files, a few larger ones."""
    for i in range(files):
        folder = root / f"pkg{i % 50}" / f"sub{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        size = 40_000 if i % 500 == 0 else 1_500
        (folder / f"mod{i}.py").write_bytes(b"x = 1  # code\n" * (size // 14))


def wrapper_run(attempt: Path, snapshot: Path | None) -> float:
    attempt.mkdir(parents=True)
    args = wrapper_args(str(attempt), "." if snapshot else str(attempt), snapshot and str(snapshot))
    start = time.perf_counter()
    subprocess.run(["sh", str(WRAPPER), *args, "true"], check=True)
    elapsed = time.perf_counter() - start
    assert (attempt / "exit_code").read_text().strip() == "0", (attempt / "output.log").read_text()
    return elapsed


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main(files: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        root = Path(folder)
        project = root / "project"
        make_project(project, files)
        _, snapshot, count = take_snapshot(project, root / "snapshots")
        size = sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file())
        times: dict[str, list[float]] = {
            "floor": [], "copy": [], "tar": [], "links": [], "copytree": []
        }  # fmt: skip
        for i in range(rounds):
            out = root / f"round{i}"
            times["floor"].append(wrapper_run(out / "floor", None))
            times["copy"].append(wrapper_run(out / "copy", snapshot))
            (out / "tar").mkdir()
            pipe = f"tar -C {snapshot} -cf - . | tar -C {out / 'tar'} -xpf -"
            times["tar"].append(timed(["sh", "-c", pipe]))
            times["links"].append(timed(["cp", "-al", str(snapshot), str(out / "links")]))
            start = time.perf_counter()
            shutil.copytree(snapshot, out / "copytree", copy_function=shutil.copy2)
            times["copytree"].append(time.perf_counter() - start)
        # (nothing is removed between rounds: on these machines a large delete slows the
        # file creation that follows it for seconds, whichever way the copy is made)
        median = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"snapshot: {count:,} files, {size / 1e6:.1f} MB; median of {rounds} rounds")
        for name, label in (
            ("floor", "wrapper start, no work directory (floor)"),
            ("copy", "wrapper start with its own copy (what runs do)"),
            ("tar", "a tar pipe"),
            ("links", "hard links, cp -al (shares files with the snapshot)"),
            ("copytree", "shutil.copytree"),
        ):
            print(f"  {label:<52} {median[name]:8.1f} ms")
        print(
            f"copy costs {median['copy'] - median['floor']:.0f} ms over the floor; "
            f"copy / tar pipe = {median['copy'] / median['tar']:.2f}x, "
            f"copy / hard links = {median['copy'] / median['links']:.2f}x, "
            f"copy / copytree = {median['copy'] / median['copytree']:.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    main(options.files, options.rounds)
