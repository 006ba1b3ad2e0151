"""A Slurm cluster behind an SSH login node, both real and on this machine (tests/slurm.py and
tests/sshd.py): how long a 1,000-trial sweep takes to be submitted until Slurm knows every
trial, against a shell loop of 1,000 `sbatch` over the same SSH login in the same run (goal:
at least 10× faster); and launch to first stored metric on the cluster against a plain SSH
host. Exits non-zero when the goal is missed. Every job it started is cancelled."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import engine_in
from engine.client import Client
from engine.model import JobSpec
from tests.slurm import SlurmCluster
from tests.sshd import SshLab

EXPERIMENT = """\
name = "wide"
command = "sleep 1"
[sweep]
method = "grid"
[sweep.params]
i = {values}
"""


def known_to_slurm(cluster: SlurmCluster) -> int:
    """Our jobs (and array tasks) that Slurm knows, in any state."""
    out = cluster.run("squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i")
    return len(out.split())


def host_fields(lab: SshLab, kind: str, cluster: SlurmCluster, trials: int) -> str:
    login = lab.hosts[0]
    fields: dict[str, object] = {
        "kind": kind,
        "port": login.port,
        "user": getpass.getuser(),
        "identity": str(lab.client_key),
        "known_hosts": str(lab.known_hosts),
        "workdir": str(login.workdir / kind),
        "max_jobs": trials,
        "keepalive_s": 1.0,
    }
    if kind == "slurm":
        fields |= {"login": login.address, "setup": f"export SLURM_CONF={cluster.conf}"}
        fields["poll_s"] = 0.5
    else:
        fields["address"] = login.address
    return "".join(
        f"{k} = {v}\n" if isinstance(v, int | float) else f'{k} = "{v}"\n'
        for k, v in fields.items()
    )


def sbatch_loop(lab: SshLab, cluster: SlurmCluster, n: int) -> float:
    """1,000 sbatch in a shell loop, in one SSH session on the same login node (held, so that
    they wait in Slurm's queue as the sweep's do)."""
    login = lab.hosts[0]
    loop = (
        f"export SLURM_CONF={cluster.conf}; for i in $(seq {n}); do"
        " sbatch --parsable --hold -J peer -o /dev/null --wrap true >/dev/null || exit 1; done"
    )
    ssh = [
        "ssh", "-p", str(login.port), "-i", str(lab.client_key),
        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "BatchMode=yes",
        f"{getpass.getuser()}@{login.address}", loop,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(ssh, check=True)
    return time.perf_counter() - start


async def first_metric(client: Client, host: str, root: Path) -> float:
    """Launch of one run on `host` until its first point is stored."""
    code = 'print(\'@runyard {"step": 0, "up": 1}\', flush=True)'
    start = time.perf_counter()
    [run] = await client.submit([JobSpec(argv=("python3", "-c", code), cwd=str(root), host=host)])
    while True:
        detail = await client.run(run.id)
        if detail.details["metrics"]:
            return time.perf_counter() - start
        await asyncio.sleep(0.02)


async def main(trials: int) -> int:
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        root = Path(folder)
        cluster = SlurmCluster(root / "slurm")
        lab = SshLab(root / "lab", 1)
        os.environ["SLURM_CONF"] = str(cluster.conf)  # for this script's own squeue
        try:
            hosts = (
                '[engine]\nstate_dir = "state"\n'
                "[hosts.rig]\n" + host_fields(lab, "slurm", cluster, trials)
                + "[hosts.box]\n" + host_fields(lab, "ssh", cluster, trials)
            )  # fmt: skip
            (root / "project").mkdir()
            project = root / "project"
            experiment = project / "wide.toml"
            experiment.write_text(EXPERIMENT.format(values=list(range(trials))))
            subprocess.run(["git", "init", "-q"], cwd=project, check=True)
            async with engine_in(project, hosts) as client:
                while not all(h.state == "up" for h in (await client.hosts()).hosts):
                    await asyncio.sleep(0.1)
                to_cluster = await first_metric(client, "rig", project)
                to_ssh = await first_metric(client, "box", project)
                await client.set_host(
                    "box", enabled=False, reason="bench: the sweep is the cluster's"
                )
                before = known_to_slurm(cluster)
                start = time.perf_counter()
                await client.sweep(experiment, cwd=str(project))
                while known_to_slurm(cluster) < before + trials:
                    await asyncio.sleep(0.05)
                ours = time.perf_counter() - start
                await client.cancel_sweep("wide-1")
            cluster.run("scancel", "-u", getpass.getuser(), check=False)
            peer = sbatch_loop(lab, cluster, trials)
            cluster.run("scancel", "-u", getpass.getuser(), check=False)
        finally:
            lab.stop()
            cluster.stop()
    ratio = peer / ours
    print(f"trials                                   {trials:,}")
    print(f"runyard: sweep submitted until Slurm knows all  {ours:6.2f} s")
    print(f"peer: a shell loop of sbatch over one SSH login {peer:6.2f} s")
    print(f"ratio peer / runyard                     {ratio:.1f}× (goal ≥ 10×)")
    print(f"launch → first metric on the cluster     {to_cluster:6.2f} s")
    print(
        f"launch → first metric on an SSH host     {to_ssh:6.2f} s  (cluster {to_cluster / to_ssh:.1f}×)"
    )
    return 0 if ratio >= 10 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    sys.exit(asyncio.run(main(parser.parse_args().trials)))
