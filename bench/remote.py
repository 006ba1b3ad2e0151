"""SSH hosts: time from launch to the first metric on a remote host (real sshd on loopback),
against the same job on the local host and against a plain `ssh host python3 -c …` printing the
same line (OpenSSH's own connect-and-run, the floor a user knows); and how long a hung link
(the connection's sshd SIGSTOPped) takes to be noticed. Medians over rounds."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import engine_in
from engine.client import Client
from engine.model import JobSpec
from engine.protocol import HostChanged, MetricsAdded
from tests.sshd import SshLab

PRINT = 'print(\'@runyard {"step": 0, "x": 1}\', flush=True)'


async def first_metric(client: Client, host: str) -> float:
    stream = client.events()
    await anext(stream)  # subscribed
    start = time.perf_counter()
    [run] = await client.submit(
        [JobSpec(argv=("/usr/bin/python3", "-c", PRINT), cwd="/", host=host)]
    )
    elapsed = await _until(stream, lambda e: isinstance(e, MetricsAdded) and e.run_id == run.id)
    elapsed -= start
    await client.wait(run.id, 30)
    return elapsed


async def _until(stream, wanted) -> float:  # type: ignore[no-untyped-def]
    """The time the first event `wanted` accepts arrived; the stream is closed after."""
    try:
        async for batch in stream:
            if any(wanted(e) for e in batch):
                return time.perf_counter()
        raise RuntimeError("the event stream ended")
    finally:
        await stream.aclose()


def plain_ssh(lab: SshLab) -> float:
    host = lab.hosts[0]
    start = time.perf_counter()
    subprocess.run(
        [
            "ssh", "-p", str(host.port), "-i", str(lab.client_key),
            "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "BatchMode=yes",
            "-F", "/dev/null", f"{getpass.getuser()}@{host.address}",
            "/usr/bin/python3", "-c", f'"{PRINT}"',
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


async def hang_noticed(client: Client, lab: SshLab) -> float:
    stream = client.events()
    await anext(stream)
    start = time.perf_counter()
    frozen = lab.hosts[0].hang()
    try:
        seen = await _until(
            stream, lambda e: isinstance(e, HostChanged) and e.state == "unreachable"
        )
    finally:
        for process in frozen:
            process.resume()
    elapsed = seen - start
    while (await client.hosts()).hosts[1].state != "up":
        await asyncio.sleep(0.05)
    return elapsed


async def main(rounds: int, keepalive: float) -> None:
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        root = Path(folder)
        lab = SshLab(root / "lab", 1)
        hosts = '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\n' + lab.toml(
            0, "box1", keepalive_s=keepalive
        )
        try:
            async with engine_in(root, hosts) as client:
                while (await client.hosts()).hosts[1].state != "up":
                    await asyncio.sleep(0.05)
                remote, local, ssh, hangs = [], [], [], []
                for _ in range(rounds):
                    remote.append(await first_metric(client, "box1"))
                    local.append(await first_metric(client, "local"))
                    ssh.append(plain_ssh(lab))
                for _ in range(3):
                    hangs.append(await hang_noticed(client, lab))
        finally:
            lab.stop()
    r, lo, s = (statistics.median(x) * 1000 for x in (remote, local, ssh))
    print(f"launch → first metric, median of {rounds}:")
    print(f"  remote host over SSH   {r:7.1f} ms")
    print(f"  local host             {lo:7.1f} ms   remote/local  {r / lo:.2f}×")
    print(f"  plain `ssh host cmd`   {s:7.1f} ms   remote/ssh    {r / s:.2f}×")
    print(
        f"hung link noticed after {statistics.median(hangs):.2f} s (median of 3; keepalive "
        f"{keepalive:g} s × 3 missed)"
    )
    print(f"({psutil.cpu_count()} CPUs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--keepalive", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.keepalive))
