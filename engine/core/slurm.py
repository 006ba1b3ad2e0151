"""Slurm as pure functions: the sbatch options for a job's resources and the host's defaults,
the batch script that runs attempts through the wrapper (one, or a job array of many), and
what squeue and sinfo print, read and judged."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from engine.model import FailureClass, HostSpec, Resources

# squeue and sinfo fields, each ended by "|": no padding, one line per job or node.
JOB_FIELDS = ("ArrayJobID", "ArrayTaskID", "State", "Reason", "RestartCnt", "NodeList", "Name")
NODE_FIELDS = ("NodeHost", "StateCompact", "Gres", "GresUsed", "CPUsState")
SQUEUE_FORMAT = ",".join(f"{field}:|" for field in JOB_FIELDS)
SINFO_FORMAT = ",".join(f"{field}:|" for field in NODE_FIELDS)

PENDING_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD"}
)
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)


class SlurmJob(msgspec.Struct, frozen=True):
    """One of our jobs (or array tasks) as squeue tells it."""

    job_id: str  # "123", or "123_4" for task 4 of array job 123
    state: str  # PENDING, RUNNING, COMPLETED, TIMEOUT, …
    reason: str  # why it waits: Resources, Priority, QOSMaxJobsPerUserLimit, …; "None"
    restarts: int
    node: str | None
    name: str

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES and not self.restarts

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


def parse_squeue(text: str) -> list[SlurmJob]:
    """squeue's lines in SQUEUE_FORMAT; a line of another shape is skipped."""
    jobs = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(JOB_FIELDS):
            continue
        array_job, task, state, reason, restarts, node, name = parts[: len(JOB_FIELDS)]
        job_id = array_job if task in ("N/A", "") else f"{array_job}_{task}"
        jobs.append(
            SlurmJob(
                job_id=job_id.strip(),
                state=state.strip().split()[0] if state.strip() else "UNKNOWN",
                reason=reason.strip(),
                restarts=int(restarts) if restarts.strip().isdigit() else 0,
                node=node.strip() or None,
                name=name.strip(),
            )
        )
    return jobs


def parse_sinfo(text: str) -> dict[str, int]:
    """sinfo's node lines in SINFO_FORMAT, counted as ClusterSample's fields (a node listed in
    two partitions once)."""
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(NODE_FIELDS):
            continue
        node, state, gres, used, cpus = (p.strip() for p in parts[: len(NODE_FIELDS)])
        if node in seen:
            continue
        seen.add(node)
        state = state.rstrip("*~#!%$@^-+").lower()
        bucket = {"idle": "idle", "mix": "mixed", "mixed": "mixed", "alloc": "allocated"}.get(
            state, "allocated" if state == "allocated" else None
        )
        if bucket is None:
            bucket = (
                "down" if state in ("down", "drain", "drained", "draining", "fail") else "other"
            )
        bucket = f"nodes_{bucket}"
        counts[bucket] = counts.get(bucket, 0) + 1
        counts["gpus_total"] = counts.get("gpus_total", 0) + _gpu_count(gres)
        counts["gpus_used"] = counts.get("gpus_used", 0) + _gpu_count(used)
        allocated, _, _, total = [*cpus.split("/"), "0", "0", "0", "0"][:4]
        if allocated.isdigit() and total.isdigit():
            counts["cpus_used"] = counts.get("cpus_used", 0) + int(allocated)
            counts["cpus_total"] = counts.get("cpus_total", 0) + int(total)
    return counts


def _gpu_count(gres: str) -> int:
    """The GPUs in a GRES string: "gpu:2", "gpu:a100:4(S:0-1)", "gpu:0,shard:8"."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def end_cause(job: SlurmJob) -> tuple[FailureClass, str] | None:
    """What ended an attempt when it was the cluster's doing, by Slurm's word: its class and
    reason; None when Slurm says nothing beyond the attempt's own exit. A job run again after
    a requeue ends the attempt it ran (its second run only leaves `requeued` and ends)."""
    node = f" {job.node}" if job.node else ""
    if job.restarts:
        return FailureClass.PREEMPTED, (
            f"requeued by Slurm (job {job.job_id}, restart {job.restarts}): preempted, its node"
            " failed, or `scontrol requeue`; retried as a new attempt"
        )
    return {
        "TIMEOUT": (
            FailureClass.TIMEOUT,
            f"reached its time limit (Slurm job {job.job_id} TIMEOUT)",
        ),
        "DEADLINE": (
            FailureClass.TIMEOUT,
            f"passed its deadline (Slurm job {job.job_id} DEADLINE)",
        ),
        "NODE_FAIL": (
            FailureClass.HOST_LOST,
            f"node{node} failed (Slurm job {job.job_id} NODE_FAIL)",
        ),
        "BOOT_FAIL": (
            FailureClass.HOST_LOST,
            f"node{node} failed to boot (Slurm job {job.job_id} BOOT_FAIL)",
        ),
        "PREEMPTED": (FailureClass.PREEMPTED, f"preempted by Slurm (job {job.job_id} PREEMPTED)"),
        "OUT_OF_MEMORY": (
            FailureClass.OOM,
            f"out of memory: over its --mem (Slurm job {job.job_id} OUT_OF_MEMORY)",
        ),
        "CANCELLED": (
            FailureClass.KILLED,
            f"cancelled in Slurm, not through Runyard (job {job.job_id} CANCELLED)",
        ),
    }.get(job.state)


def sbatch_options(
    host: HostSpec, resources: Resources, name: str, tasks: int, throttle: int | None
) -> list[str]:
    """sbatch's options for `tasks` attempts of one shape (a job array when more than one,
    at most `throttle` of them running at once): what the job asks for, the host's defaults,
    and the signal before the time limit that lets a trainer checkpoint."""
    signal = host.limit_signal.upper().removeprefix("SIG")
    options = [
        "--parsable",
        f"--job-name={name}",
        "--output=/dev/null",  # each attempt's output goes to its own output.log
        f"--signal=B:{signal}@{host.limit_signal_s}",
    ]
    if tasks > 1:
        options.append(f"--array=0-{tasks - 1}" + (f"%{throttle}" if throttle else ""))
    for flag, value in (
        ("--partition", host.partition),
        ("--account", host.account),
        ("--qos", host.qos),
        ("--time", host.time),
    ):
        if value is not None:
            options.append(f"{flag}={value}")
    if resources.cpus > 0:
        options.append(f"--cpus-per-task={math.ceil(resources.cpus)}")
    if resources.mem_gb > 0:
        options.append(f"--mem={math.ceil(resources.mem_gb * 1024)}M")
    if resources.gpus > 0:
        options.append(f"--gres=gpu:{resources.gpus}")
    return [*options, *host.sbatch_args]


class AttemptFiles(NamedTuple):
    """The names of an attempt's files that its batch script writes (engine.executors.layout):
    its output log, its job id, a requeued rerun's mark, and the run's folders kept across
    attempts."""

    output: str
    batch_job: str
    requeued: str
    kept: tuple[str, ...]


def batch_script(
    attempts: Sequence[tuple[str, Sequence[str]]],
    wrapper: str,
    setup: str | None,
    files: AttemptFiles,
) -> str:
    """The batch script for attempts given as (attempt folder, the wrapper's arguments and the
    command): array task i (or the one job) makes attempt i's folder and the run's kept
    folders, writes its job id there, and runs the attempt through the wrapper, its own
    output and the host's `setup` going to that attempt's output log. Submitting makes no
    folder: a thousand mkdirs on a cluster's shared file system cost seconds. Run again by a
    requeue, it leaves its restart count in the folder and ends at once: the engine retries it
    as a new attempt instead."""
    cases = "\n".join(
        f"{i}) dir={shlex.quote(folder)}; set -- {shlex.join(args)} ;;"
        for i, (folder, args) in enumerate(attempts)
    )
    kept = " ".join(f'"${{dir%/*}}/{name}"' for name in files.kept)
    return f"""#!/bin/bash
# Runyard: {len(attempts)} attempt(s); array task i (or the one job) runs attempt i.
case "${{SLURM_ARRAY_TASK_ID:-0}}" in
{cases}
*) exit 0 ;;
esac
(umask 077 && mkdir -p "$dir" {kept}) || exit 97
if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then
    echo "${{SLURM_RESTART_COUNT}}" > "$dir/{files.requeued}"
    exit 0
fi
job=${{SLURM_ARRAY_JOB_ID:+${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}}}
printf %s "${{job:-$SLURM_JOB_ID}}" > "$dir/{files.batch_job}"
exec >> "$dir/{files.output}" 2>&1 < /dev/null
{setup or ":"}
exec sh {shlex.quote(wrapper)} "$@"
"""
