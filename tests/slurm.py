"""A real Slurm cluster on this machine (../shared/slurm-test-cluster.md): a controller and one
node with two fake GPUs, on free loopback ports, everything in one folder; with `accounting`,
also slurmdbd over a MariaDB server of its own, enforcing accounts and QOS as a university
cluster does."""

from __future__ import annotations

import contextlib
import getpass
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
SLURMDBD, MARIADBD = "/usr/sbin/slurmdbd", "/usr/sbin/mariadbd"
ACCOUNT = "lab"  # the one account the accounting cluster lets its user submit under


def require_slurm(accounting: bool = False) -> None:
    """Skip where Slurm (and for `accounting`, slurmdbd and MariaDB) is not installed, except
    under CI, where that is a failure."""
    needed = [SLURMCTLD, SLURMD] + ([SLURMDBD, MARIADBD] if accounting else [])
    if not (all(Path(p).exists() for p in needed) and shutil.which("sbatch")):
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {', '.join(needed)} (.ci/run installs them)")
        pytest.skip(f"no {' or '.join(needed)}: install slurm-wlm, slurmdbd, mariadb-server-core")


class SlurmCluster:
    """slurmctld and slurmd in `folder`, with node `localhost` (2 CPUs, 2 GPUs) in partition
    `debug`; `env` is what every Slurm command needs (SLURM_CONF). With `accounting`, jobs are
    accepted only under account `lab` and an existing QOS."""

    def __init__(
        self,
        folder: Path,
        node_timeout_s: int = 300,
        min_job_age_s: int = 300,
        accounting: bool = False,
    ) -> None:
        require_slurm(accounting)
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
{self._accounting() if accounting else "AccountingStorageType=accounting_storage/none"}
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
        if accounting:
            self._start_accounting()
        self.start_controller(fresh=True)
        self.start_node()
        self.until_node("idle")

    def _accounting(self) -> str:
        """slurm.conf's lines for slurmdbd on a free port, written with slurmdbd.conf (which
        slurmdbd finds beside slurm.conf) for a MariaDB server on another."""
        self.dbd_port, self.db_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        dbd_conf = self.folder / "slurmdbd.conf"
        dbd_conf.write_text(
            f"""AuthType=auth/none
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={self.folder}/slurmdbd.pid
LogFile={self.folder}/log/slurmdbd.log
"""
        )
        dbd_conf.chmod(0o600)  # slurmdbd refuses a config others may read
        return f"""AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStorageEnforce=associations,limits,qos"""

    def _start_accounting(self) -> None:
        """A MariaDB server of this cluster's own (no grant tables: on loopback, for one
        test), slurmdbd over it, and the cluster, account `lab` and this user registered."""
        data = self.folder / "mariadb"
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={data}", "--user=root",
             "--bind-address=127.0.0.1", f"--port={self.db_port}", "--skip-grant-tables",
             f"--socket={self.folder}/mariadb.sock", f"--pid-file={self.folder}/mariadbd.pid",
             f"--log-error={self.folder}/log/mariadbd.log", "--innodb-buffer-pool-size=16M"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self._until(lambda: (self.folder / "mariadbd.pid").exists(), "MariaDB")
        subprocess.run([SLURMDBD], env=os.environ | self.env, check=True)
        user = getpass.getuser()
        for what in (
            ["cluster", "rig"],
            ["account", ACCOUNT, "cluster=rig"],
            ["user", user, f"account={ACCOUNT}", "cluster=rig"],
        ):
            self._until(lambda what=what: self._add(what), f"slurmdbd to add {' '.join(what)}")

    def _add(self, what: list[str]) -> bool:
        """`sacctmgr add`: whether it is there now (slurmdbd may not answer yet)."""
        self.run("sacctmgr", "-i", "add", *what, check=False)
        return self.run("sacctmgr", "-n", "-P", "show", *what[:2], check=False).strip() != ""

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
        self.kill("slurmdbd", signal.SIGTERM)
        self.kill("mariadbd", signal.SIGTERM)
