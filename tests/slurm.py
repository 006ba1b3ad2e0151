"""A real Slurm cluster on this machine (../shared/slurm-test-cluster.md): a controller and one
node with two fake GPUs, on free loopback ports, everything in one folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .sshd import free_port

SLURMCTLD, SLURMD = "/usr/sbin/slurmctld", "/usr/sbin/slurmd"


def require_slurm() -> None:
    """Skip where Slurm is not installed, except under CI, where that is a failure."""
    if not (Path(SLURMCTLD).exists() and Path(SLURMD).exists() and shutil.which("sbatch")):
        if os.environ.get("CI"):
            pytest.fail("CI needs Slurm (.ci/run installs slurm-wlm)")
        pytest.skip("no Slurm: install slurm-wlm to run the Slurm host tests")


class SlurmCluster:
    """slurmctld and slurmd in `folder`, with node `localhost` (2 CPUs, 2 GPUs) in partition
    `debug`; `env` is what every Slurm command needs (SLURM_CONF)."""

    def __init__(self, folder: Path, node_timeout_s: int = 300, min_job_age_s: int = 300) -> None:
        require_slurm()
        self.folder = folder
        for sub in ("state", "spool", "log"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for gpu in ("gpu0", "gpu1"):  # Slurm's fake GPUs: character devices like /dev/null
            os.mknod(folder / gpu, 0o666 | 0o020000, os.makedev(1, 3))
        self.conf = folder / "slurm.conf"
        ctld, node = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.conf.write_text(
            f"""ClusterName=rig
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
SlurmctldPort={ctld}
SlurmdPort={node}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
GresTypes=gpu
MinJobAge={min_job_age_s}
SlurmdTimeout={node_timeout_s}
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        (folder / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName=localhost Name=gpu File={folder}/gpu[0-1]\n"
        )
        self.env = {"SLURM_CONF": str(self.conf)}
        self.start_controller(fresh=True)
        self.start_node()
        self.until_node("idle")

    def run(self, *argv: str, check: bool = True) -> str:
        """A Slurm command's output (sinfo, squeue, scontrol, …)."""
        done = subprocess.run(
            argv, env=os.environ | self.env, capture_output=True, text=True, timeout=30
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def start_controller(self, fresh: bool = False) -> None:
        """slurmctld; `fresh` forgets saved jobs, else it resumes them as a restart does."""
        args = [SLURMCTLD] + (["-c"] if fresh else [])
        subprocess.run(args, env=os.environ | self.env, check=True)
        self._until(lambda: self.run("sinfo", "-h", "-o", "%T", check=False) != "", "slurmctld")

    def start_node(self) -> None:
        subprocess.run([SLURMD], env=os.environ | self.env, check=True)

    def until_node(self, state: str, timeout: float = 60) -> None:
        self._until(
            lambda: self.run("sinfo", "-h", "-o", "%T", check=False).strip().rstrip("*") == state,
            f"the node to be {state}",
            timeout,
        )

    def _until(self, ready: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"Slurm test cluster: waited {timeout:g}s for {what}")
            time.sleep(0.05)

    def _pid(self, name: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.folder / f"{name}.pid").read_text())
        return None

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Stop slurmctld or slurmd by its pid file (never by name), killed unless told
        another signal, and wait until it is gone."""
        pid = self._pid(name)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if (
                Path(f"/proc/{pid}/stat").exists()
                and ") Z" in Path(f"/proc/{pid}/stat").read_text()
            ):
                break
            time.sleep(0.02)
        (self.folder / f"{name}.pid").unlink(missing_ok=True)

    def kill_node_processes(self) -> None:
        """The node dies: slurmd and every job step it started (a slurmstepd runs apart from
        slurmd, known by its working directory in this cluster's folder), as a power cut would
        take them; the jobs' own processes are the caller's to kill."""
        self.kill("slurmd")
        for process in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error, ValueError):
                ours = Path(process.cwd()).is_relative_to(self.folder)
                if process.info["name"] == "slurmstepd" and ours:
                    process.kill()

    def stop(self) -> None:
        """End every job, then the node (with any job step still winding down) and the
        controller: nothing of the cluster outlives the test."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "-u", "root", check=False)
        self.kill_node_processes()
        self.kill("slurmctld")
