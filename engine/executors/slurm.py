"""The Slurm executor: a cluster as one host. Each attempt is a batch job (attempts of one
shape submitted together are one job array) running the same wrapper in its own folder on the
cluster's shared file system, whose files are the truth; squeue says whether it waits (and
why) or runs, sinfo what the partition has. Reached over SSH to the login node (`login`,
slurm_ssh.py), or directly when the daemon runs there (slurm_here.py).

One poller per cluster asks squeue and sinfo every `poll_s` in one command, and reads the
files of the attempts whose job it saw end or vanish; every waiter works from what it found."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shlex
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine.core import slurm
from engine.core.failures import last_line, signal_name
from engine.executors import layout
from engine.executors.base import (
    Attempt,
    ExitInfo,
    HostUnreachable,
    Launch,
    ProcessState,
    wrapper_args,
)
from engine.executors.local import WRAPPER
from engine.model import ClusterSample, FailureClass, HostSample, HostSpec, Resources

# What a run is given of the daemon's environment; the rest comes from the login environment
# Slurm passes on, the host's `setup`, and Slurm itself (CUDA_VISIBLE_DEVICES among them).
PASSED_ENV = ("RUNYARD_", "PYTHONUNBUFFERED")
FILES = slurm.AttemptFiles(
    layout.OUTPUT, layout.BATCH_JOB, layout.REQUEUED, layout.KEPT_ACROSS_ATTEMPTS
)
COMMAND_TIMEOUT_S = 60.0


class _Followed(msgspec.Struct):
    """What the poller knows of one attempt it follows."""

    attempt: Attempt
    job: slurm.SlurmJob | None = None
    missing_since: float | None = None  # Slurm answered without this job since then
    started: Attempt | None = None  # once its job runs (with its pid)
    ended: ExitInfo | None = None


class SlurmControl:
    """Slurm's side of the executor, over a base that runs shell commands and reads files
    where the cluster's login node does (`_shell`, `_put_text`, `_tools`, `_snapshot_path`,
    `_data_path`, and the base executor's output reading)."""

    host: HostSpec
    starts_at_once = False

    def _init_slurm(self, state_dir: Path, on_sample: Callable[[HostSample], None]) -> None:
        # Our jobs' names start with a tag of this state directory, so that several daemons
        # (or a user's own jobs) on one cluster account are told apart.
        where = f"{socket.gethostname()}:{state_dir}"
        self.tag = "ry-" + hashlib.sha256(where.encode()).hexdigest()[:6]
        self.on_sample = on_sample
        self.followed: dict[str, _Followed] = {}  # by attempt folder
        self.jobs: dict[str, slurm.SlurmJob] = {}  # ours, by job id, as squeue last told
        self.cluster = ClusterSample()
        self.squeue_error: str | None = None
        self._away: HostUnreachable | None = None  # the last poll could not reach the login
        self._polled = asyncio.Condition()
        self._poke = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._submitted: dict[str, list[str]] = {}  # job name → attempt folders, in task order
        self._by_folder: tuple[dict[str, slurm.SlurmJob], dict[str, str]] | None = None
        # scancel's options → the jobs to end with them in the next command, each with its outcome
        self._scancels: dict[str, list[tuple[str, asyncio.Future[bool]]]] = {}
        self._scanceller: asyncio.Task[None] | None = None

    # --- what the base provides --------------------------------------------------------------

    async def _shell(
        self, script: str, timeout: float | None = COMMAND_TIMEOUT_S, stdin: str | None = None
    ) -> tuple[int, str, str]:
        """Run a bash script where Slurm's commands are; its status, stdout and stderr. A long
        list goes to `stdin`, never into the script."""
        raise NotImplementedError

    async def _put_text(self, path: str, text: str) -> None:
        raise NotImplementedError

    async def _tools(self) -> str:
        """The folder on the shared file system that holds the wrapper and batch scripts."""
        raise NotImplementedError

    async def _snapshot_path(self, snapshot: str) -> str:
        raise NotImplementedError

    async def _data_path(self, launch: Launch) -> list[tuple[str, str]]:
        raise NotImplementedError

    # --- the poller ---------------------------------------------------------------------------

    def _start_polling(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_forever(), name=f"slurm-{self.host.name}")

    async def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self._poll()
                self._away = None
            except HostUnreachable as exc:  # its runs are unreachable until the link is back
                self._away = exc
            except Exception as exc:  # a surprise: tried again next round
                self.squeue_error = str(exc) or type(exc).__name__
                traceback.print_exc(file=sys.stderr)
            async with self._polled:
                self._polled.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.host.poll_s):
                    await self._poke.wait()
            self._poke.clear()

    async def _next_poll(self, now: bool = False) -> None:
        """Return after the next poll (asked for at once when `now`, else in its time: every
        waiter works from the same rounds); raise HostUnreachable when it could not reach the
        login node."""
        async with self._polled:
            if now:
                self._poke.set()
            await self._polled.wait()
        if self._away is not None:
            raise HostUnreachable(str(self._away))

    async def _poll(self) -> None:
        """One round: our jobs from squeue, the partition from sinfo, and the files of the
        attempts whose job ended, vanished or began to run."""
        partition = f" -p {shlex.quote(self.host.partition)}" if self.host.partition else ""
        script = (
            f'squeue -h -r -t all -u "$(id -un)" -O {shlex.quote(slurm.SQUEUE_FORMAT)};'
            ' echo "@squeue $?";'
            f" sinfo -h -N{partition} -O {shlex.quote(slurm.SINFO_FORMAT)} 2>/dev/null;"
            ' echo "@sinfo $?"'
        )
        _, out, err = await self._shell(self._with_setup(script))
        squeue, _, rest = out.partition("@squeue ")
        status, _, rest = rest.partition("\n")
        sinfo, _, _ = rest.partition("@sinfo ")
        now = time.time()
        if status.strip() != "0":
            self.squeue_error = last_line(err) or f"squeue exited {status.strip() or '?'}"
        else:
            self.squeue_error = None
            self.jobs = {
                j.job_id: j for j in slurm.parse_squeue(squeue) if j.name.startswith(self.tag)
            }
        await self._update_followed(now)
        self._sample(sinfo, now)

    async def _update_followed(self, now: float) -> None:
        """Match each followed attempt with its job; read the files of those that may have
        ended or begun to run, all in one command, and settle them."""
        to_read: list[_Followed] = []
        for followed in self.followed.values():
            if followed.ended is not None:
                continue
            job = self._job_of(followed.attempt)
            if self.squeue_error is None and (job is None or job.ended):
                followed.missing_since = followed.missing_since or now
            elif job is not None:
                followed.missing_since = None
            followed.job = job or followed.job
            begun = job is not None and job.state not in slurm.PENDING_STATES
            if job is None or job.ended or job.restarts or (begun and followed.started is None):
                to_read.append(followed)
        if to_read:
            files = await self._read_files([f.attempt.attempt_dir for f in to_read])
            for followed in to_read:
                self._settle(followed, files.get(followed.attempt.attempt_dir), now)
        for followed in self.followed.values():
            job = self._job_of(followed.attempt)
            if followed.ended is not None and job is not None and job.restarts and not job.ended:
                await self._scancel(job.job_id)  # run again by Slurm: the engine retries it

    def _settle(self, followed: _Followed, files: tuple[Any, ...] | None, now: float) -> None:
        """An attempt whose files were read: started (its wrapper wrote its pid), ended (its
        exit code, with what Slurm says of it), or forgotten by Slurm past the grace."""
        code, written, requeued, pid = files or (None, None, 0, 0)
        attempt = followed.attempt
        job = self._job_of(attempt)
        if pid and followed.started is None:
            followed.started = msgspec.structs.replace(attempt, pid=pid)
        if job is None and requeued:
            job = slurm.SlurmJob(attempt.batch_job or "?", "REQUEUED", "", requeued, None, "")
        cause = slurm.end_cause(job) if job is not None else None
        if cause is not None and (job is None or job.restarts or job.ended):
            followed.ended = ExitInfo(code, ended_at=written or now, cause=cause)
        elif code is not None and (job is None or job.ended):
            followed.ended = ExitInfo(code, ended_at=written)

        elif followed.missing_since is not None:
            away = now - followed.missing_since
            if away >= self.host.forgotten_after_s:
                waited = f"(waited {away:.0f}s)"
                if job is not None:  # the wrapper never finished: killed with its node
                    why = (
                        f"Slurm job {job.job_id} ended {job.state} ({job.reason}) and left no exit"
                        f" code {waited}: its node or its processes were lost"
                    )
                    followed.ended = ExitInfo(None, cause=(FailureClass.HOST_LOST, why))
                    return
                if attempt.batch_job is None:
                    what = "no job of it reached Slurm (the daemon stopped while submitting it)"
                else:
                    what = f"Slurm no longer knows job {attempt.batch_job}"
                followed.ended = ExitInfo(
                    None, cause=(None, f"{what} and it left no exit code {waited}")
                )

    async def _read_files(self, folders: list[str]) -> dict[str, tuple[Any, ...]]:
        """Each folder's exit code and when it was written, restarts it left (`requeued`),
        and its wrapper's pid: one command for all."""
        script = (
            "while IFS= read -r d; do c=; t=; r=; p=;"
            f' if [ -s "$d/{layout.EXIT_CODE}" ]; then read -r c < "$d/{layout.EXIT_CODE}";'
            f' t=$(stat -c %.3Y "$d/{layout.EXIT_CODE}" 2>/dev/null'
            f' || stat -c %Y "$d/{layout.EXIT_CODE}"); fi;'
            f' [ -s "$d/{layout.REQUEUED}" ] && read -r r < "$d/{layout.REQUEUED}";'
            f' [ -s "$d/{layout.PID}" ] && read -r p < "$d/{layout.PID}";'
            ' printf "%s|%s|%s|%s|%s\\n" "$d" "$c" "$t" "$r" "$p"; done'
        )
        _, out, _ = await self._shell(script, stdin="".join(f"{f}\n" for f in folders))
        found: dict[str, tuple[Any, ...]] = {}
        for line in out.splitlines():
            folder, code, written, requeued, pid = (line.rsplit("|", 4) + [""] * 5)[:5]
            found[folder] = (
                int(code) if code.lstrip("-").isdigit() else None,
                _float(written),
                int(requeued) if requeued.isdigit() else 0,
                int(pid) if pid.isdigit() else 0,
            )
        return found

    def _job_of(self, attempt: Attempt) -> slurm.SlurmJob | None:
        """The attempt's job as squeue last told it; for an array task squeue no longer
        lists, its array's own record once that has ended (cancelled whole, say)."""
        job_id = attempt.batch_job or ""
        job = self.jobs.get(job_id)
        if job is None and "_" in job_id:
            whole = self.jobs.get(job_id.split("_")[0])
            if whole is not None and whole.ended:
                return msgspec.structs.replace(whole, job_id=job_id)
        return job

    def _sample(self, sinfo: str, now: float) -> None:
        ours = [j for j in self.jobs.values() if not j.ended]
        pending = sorted((j for j in ours if j.pending), key=_job_order)
        counts = slurm.parse_sinfo(sinfo)
        self.cluster = ClusterSample(
            **counts,
            jobs_pending=len(pending),
            jobs_running=sum(j.state == "RUNNING" for j in ours),
            oldest_pending_reason=pending[0].reason if pending else None,
            error=self.squeue_error,
        )
        used, total = self.cluster.cpus_used, self.cluster.cpus_total
        self.on_sample(
            HostSample(
                host=self.host.name,
                time=now,
                cpu_percent=100.0 * used / total if total else 0.0,
                cpu_per_core=(),
                mem_used_mb=0.0,
                mem_total_mb=0.0,
                cluster=self.cluster,
            )
        )

    def _with_setup(self, script: str) -> str:
        return f"{self.host.setup}\n{script}" if self.host.setup else script

    # --- the executor interface --------------------------------------------------------------

    async def start(self, launch: Launch) -> Attempt:
        [started] = await self.start_many([launch])
        if isinstance(started, Exception):
            raise started
        return started

    async def start_many(self, launches: Sequence[Launch]) -> list[Attempt | Exception]:
        """Submit the launches, those of one shape (resources and sweep) as one job array."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, launch in enumerate(launches):
            key = (launch.resources, launch.max_concurrent, launch.snapshot)
            groups.setdefault(key, []).append(i)
        started: list[Attempt | Exception] = [OSError("not submitted")] * len(launches)
        for indexes in groups.values():
            group = [launches[i] for i in indexes]
            try:
                attempts = await self._submit(group)
            except Exception as exc:
                attempts = [exc] * len(group)
            for i, attempt in zip(indexes, attempts, strict=True):
                started[i] = attempt
        return started

    async def _submit(self, launches: list[Launch]) -> list[Attempt]:
        tools = await self._tools()
        first = launches[0]
        name = f"{self.tag}-{first.run_id}-{first.attempt}"
        snapshot = await self._snapshot_path(first.snapshot) if first.snapshot else None
        tasks = []
        folders = []
        for launch in launches:
            folder = launch.attempt_dir
            links = await self._data_path(launch) if launch.snapshot else []
            env = [
                f"{k}={v}"
                for k, v in launch.env.items()
                if k.startswith(PASSED_ENV) or k in PASSED_ENV
            ]
            forward = self.host.limit_signal.upper().removeprefix("SIG")
            args = wrapper_args(folder, launch.cwd, snapshot, links, forward)
            tasks.append((folder, [*args, "env", *env, *launch.argv]))
            folders.append(folder)
        script = slurm.batch_script(tasks, f"{tools}/{WRAPPER.name}", self.host.setup, FILES)
        # The task list first: it is how a job found in squeue by its name is matched to its
        # attempts (`_jobs_by_folder`) when the daemon stops before it hears the job id.
        await self._put_text(f"{tools}/jobs/{name}.tasks", "".join(f"{f}\n" for f in folders))
        await self._put_text(f"{tools}/jobs/{name}.sh", script)
        options = slurm.sbatch_options(
            self.host, first.resources, name, len(launches), first.max_concurrent
        )
        status, out, err = await self._shell(
            self._with_setup(
                f"cd {shlex.quote(tools)}/jobs && sbatch {shlex.join(options)} {shlex.quote(name)}.sh"
            )
        )
        job = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
        if status != 0 or not job.isdigit():
            why = last_line(err) or f"sbatch exited {status}"
            raise OSError(f"could not submit to {self.host.name}: {why}")
        ids = [f"{job}_{i}" for i in range(len(launches))] if len(launches) > 1 else [job]
        self._submitted[name] = folders
        attempts = [Attempt(folder, 0, None, i) for folder, i in zip(folders, ids, strict=True)]
        for attempt in attempts:
            self.followed[attempt.attempt_dir] = _Followed(attempt)
        self._poke.set()
        return attempts

    def _follow(self, attempt: Attempt) -> _Followed:
        followed = self.followed.get(attempt.attempt_dir)
        if followed is None or followed.attempt.batch_job != attempt.batch_job:
            followed = self.followed[attempt.attempt_dir] = _Followed(attempt)
            self._poke.set()
        return followed

    async def until_started(self, attempt: Attempt) -> Attempt | None:
        followed = self._follow(attempt)
        while followed.started is None and followed.ended is None:
            await self._next_poll()
        return followed.started if followed.started is not None else None

    async def wait(self, attempt: Attempt) -> ExitInfo:
        followed = self._follow(attempt)
        while followed.ended is None:
            await self._next_poll()
        self.followed.pop(attempt.attempt_dir, None)
        return followed.ended

    async def probe(self, attempt: Attempt) -> ProcessState:
        followed = self._follow(attempt)
        await self._next_poll(now=True)
        ended = followed.ended
        if ended is not None:
            lost = ended.exit_code is None and (ended.cause is None or ended.cause[0] is None)
            return ProcessState.GONE if lost else ProcessState.EXITED
        return ProcessState.RUNNING  # or waiting in Slurm's queue, or not found for a while

    async def hold(self, attempt: Attempt, held: bool) -> bool:
        job = self._job_of(attempt)
        if job is None or job.state not in slurm.PENDING_STATES:
            return False
        verb = "hold" if held else "release"
        status, _, _ = await self._shell(
            self._with_setup(f"scontrol {verb} {shlex.quote(job.job_id)}")
        )
        self._poke.set()
        return status == 0

    def waiting_reason(self, attempt: Attempt) -> str | None:
        job = self._job_of(attempt)
        if job is None or not job.pending:
            return None
        return f"waits in Slurm: {job.reason} (job {job.job_id})"

    def node_of(self, attempt: Attempt) -> str | None:
        followed = self.followed.get(attempt.attempt_dir)
        job = self._job_of(attempt) or (followed.job if followed else None)
        return job.node if job is not None else None

    def describe(self, attempt: Attempt) -> str:
        node = self.node_of(attempt)
        return (
            f"Slurm job {attempt.batch_job}"
            + (f" on {node}" if node else "")
            + f", pid {attempt.pid}"
        )

    async def signal(self, attempt: Attempt, signum: int) -> bool:
        """Pass a signal to the attempt's processes (`scancel --full --signal`); SIGKILL, or
        any signal to a job that does not run yet, ends the job (`scancel`)."""
        job = attempt.batch_job
        if job is None:
            return False
        known = self._job_of(attempt)
        if known is None:  # submitted since the last poll: squeue tells which it is
            await self._next_poll(now=True)
            known = self._job_of(attempt)
        if known is not None and known.ended:
            return False
        if known is not None and known.state in slurm.PENDING_STATES:
            await self._scancel(job)
            followed = self.followed.get(attempt.attempt_dir)
            if followed is not None and followed.started is None and followed.ended is None:
                # A pending array task that is cancelled leaves no record in squeue.
                why = f"ended in Slurm's queue before it ran (job {job})"
                followed.ended = ExitInfo(None, ended_at=time.time(), cause=(None, why))
            return True
        if known is None or signum == signal.SIGKILL:
            # Slurm ends the job its own way (TERM, then KILL): its wrapper records how.
            return await self._scancel(job)
        name = signal_name(signum).removeprefix("SIG")
        return await self._scancel(job, f"--full --signal={name}")

    async def _scancel(self, job: str, options: str = "") -> bool:
        """scancel a job with `options`. One scancel runs at a time; the jobs asked for
        meanwhile (a sweep cancelled) go together in the next."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._scancels.setdefault(options, []).append((job, done))
        if self._scanceller is None or self._scanceller.done():
            self._scanceller = loop.create_task(self._scancel_asked())
        return await asyncio.shield(done)

    async def _scancel_asked(self) -> None:
        while self._scancels:
            options, asked = self._scancels.popitem()
            try:
                status, _, _ = await self._shell(
                    self._with_setup(f"xargs -r scancel {options}"),
                    stdin="".join(f"{job}\n" for job, _ in asked),
                )
                outcome: bool | BaseException = status == 0
            except Exception as exc:
                outcome = exc
            for _, done in asked:
                if done.done():
                    continue
                if isinstance(outcome, BaseException):
                    done.set_exception(outcome)
                    done.exception()  # retrieved: its caller may have gone
                else:
                    done.set_result(outcome)
            self._poke.set()

    async def reattach(self, attempt: Attempt) -> Attempt:
        """The attempt with its job (from its folder's `slurm_job`, which the job writes when
        it starts, else found by its job's name among ours: one still waiting in Slurm's
        queue, or a daemon stopped between sbatch and the store) and pid."""
        attempt = await super().reattach(attempt)  # type: ignore[misc]
        if attempt.batch_job is not None:
            return attempt
        folder = attempt.attempt_dir
        _, out, _ = await self._shell(
            f"cat {shlex.quote(f'{folder}/{layout.BATCH_JOB}')} 2>/dev/null"
        )
        job = out.strip() or (await self._jobs_by_folder()).get(folder)
        return msgspec.structs.replace(attempt, batch_job=job) if job else attempt

    async def attempt_exists(self, run_id: int, attempt: int) -> bool:
        """Whether the attempt was submitted: its folder exists (its job has started), or a
        job Slurm knows runs it."""
        folder = self.attempt_dir(run_id, attempt)
        if folder in await self._jobs_by_folder():
            return True
        return await super().attempt_exists(run_id, attempt)  # type: ignore[misc]

    async def existing_attempts(self, wanted: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        in_slurm = await self._jobs_by_folder()
        found = {w for w in wanted if self.attempt_dir(*w) in in_slurm}
        rest = [w for w in wanted if w not in found]
        return found | await super().existing_attempts(rest)  # type: ignore[misc]

    async def _jobs_by_folder(self) -> dict[str, str]:
        """The attempt folders of our submissions that Slurm knows, each with its job id (an
        array's task): from our jobs' names in squeue and each submission's task list. Made
        once per poll (a restart asks for each of a thousand attempts)."""
        if not self.jobs:
            await self._next_poll(now=True)
        jobs = self.jobs  # each poll makes a new dict
        if self._by_folder is not None and self._by_folder[0] is jobs:
            return self._by_folder[1]
        arrays = {job.name: job.job_id.split("_")[0] for job in jobs.values()}
        tools = await self._tools()
        found: dict[str, str] = {}
        for name, array in arrays.items():
            folders = self._submitted.get(name)
            if folders is None:
                _, out, _ = await self._shell(
                    f"cat {shlex.quote(f'{tools}/jobs/{name}.tasks')} 2>/dev/null"
                )
                folders = self._submitted[name] = out.splitlines()
            for i, folder in enumerate(folders):
                found[folder] = f"{array}_{i}" if len(folders) > 1 else array
        self._by_folder = (jobs, found)
        return found

    async def diagnose(self) -> list[tuple[str, bool, str]]:
        """Slurm's commands found after `setup`, the partition, the account and QOS accepted
        (`sbatch --test-only`), the workdir writable, Python present."""
        workdir = _path(self.host.workdir or "~/runyard")
        partition = self.host.partition
        options = slurm.sbatch_options(self.host, Resources(), f"{self.tag}-check", 1, None)
        test = [o for o in options if not o.startswith(("--parsable", "--signal", "--output"))]
        checks = [
            ("slurm", "for c in sbatch squeue sinfo scancel; do command -v $c || exit 1; done"),
            (
                "partition",
                f"sinfo -h -o %P -p {shlex.quote(partition)} | grep . || exit 1"
                if partition
                else "sinfo -h -o %P | grep '*' || { echo 'no default partition' >&2; exit 1; }",
            ),
            ("submit", f"sbatch --test-only {shlex.join(test)} --wrap true 2>&1"),
            ("workdir", f"mkdir -p {workdir} && test -w {workdir} && cd {workdir} && pwd"),
            (
                "python",
                f"{shlex.quote(self.host.python)} -c 'import sys; print(sys.version.split()[0])'",
            ),
        ]
        steps: list[tuple[str, bool, str]] = []
        for name, command in checks:
            status, out, err = await self._shell(self._with_setup(command))
            ok = status == 0
            if name == "partition" and ok and not out.strip():
                ok = False
            said = last_line(out) if ok else (last_line(err) or last_line(out))
            steps.append((name, ok, said or (f"exit status {status}" if not ok else "")))
            if name == "slurm" and not ok:
                break
        return steps


def _job_order(job: slurm.SlurmJob) -> tuple[int, int]:
    """Submission order: the array's job id, then the task."""
    array, _, task = job.job_id.partition("_")
    return (int(array) if array.isdigit() else 0, int(task) if task.isdigit() else 0)


def _path(text: str) -> str:
    """A path for the shell: `~` left to expand."""
    return text if text.startswith("~") and " " not in text else shlex.quote(text)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
