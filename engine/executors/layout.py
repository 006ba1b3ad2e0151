"""A run's folders and files on a host, named in one place (wrapper.sh writes the same names):
`runs/<run id>/` holds `artifacts/` and `checkpoints/`, kept across attempts, and one
`attempt-<n>/` per attempt with `pid` (written first), `output.log`, `exit_code` (written
last, in one write: the attempt has ended once that file is not empty) and, for a run from a
code snapshot, its own copy of the code in `work/`; on a cluster, `slurm_job` and, from a
requeued job's rerun, `requeued`."""

from __future__ import annotations

from pathlib import PurePath

PID = "pid"
OUTPUT = "output.log"
EXIT_CODE = "exit_code"
BATCH_JOB = "slurm_job"  # on a cluster: the attempt's job id, written by its job as it starts
REQUEUED = "requeued"  # on a cluster: left by Slurm's rerun of a requeued job, which ends
ARTIFACTS = "artifacts"
CHECKPOINTS = "checkpoints"
KEPT_ACROSS_ATTEMPTS = (CHECKPOINTS, ARTIFACTS)


def runs_dir(root: str | PurePath) -> str:
    """The folder of every run's folder under a host's work directory `root`."""
    return f"{root}/runs"


def run_dir(root: str | PurePath, run_id: int) -> str:
    """A run's folder under a host's work directory `root`."""
    return f"{runs_dir(root)}/{run_id}"


def attempt_dir(root: str | PurePath, run_id: int, attempt: int) -> str:
    return f"{run_dir(root, run_id)}/attempt-{attempt}"


def work_dir(attempt_dir: str) -> str:
    """Where an attempt made from a snapshot runs: a folder of its own in its attempt folder."""
    return f"{attempt_dir}/work"


def artifact_dir(run_dir: str) -> str:
    return f"{run_dir}/{ARTIFACTS}"


def checkpoint_dir(run_dir: str) -> str:
    return f"{run_dir}/{CHECKPOINTS}"
