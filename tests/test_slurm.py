"""Slurm clusters as hosts, through the real daemon against a real Slurm controller and node on
this machine (tests/slurm.py): job arrays, pending reasons, requeues, lost nodes, time
limits, restarts of the daemon and of slurmctld, cancel and prune, and host checks."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from engine.client import Client, connect
from engine.errors import EngineError
from engine.executors.slurm import FILES
from engine.model import FailureClass, JobSpec, Resources, RetryPolicy, RunStatus

from .conftest import Project, wait_until
from .slurm import ACCOUNT, SlurmCluster
from .sshd import SshLab
from .test_sweeps import STEPS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRAINER = """\
import json, os, sys, time
params = json.loads(os.environ["RUNYARD_PARAMS"])
steps, pause = int(params.get("steps", 3)), float(params.get("pause", 0.05))
gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
print("GPU", gpu, "JOB", os.environ.get("SLURM_JOB_ID"), flush=True)
for step in range(steps):
    print("@runyard", json.dumps({"step": step, "x": params.get("x", 0) + step, "gpu": int(gpu or -1)}), flush=True)
    time.sleep(pause)
"""

EXPERIMENT = """\
name = "grid"
command = "{python} trainer.py"
resources = {{ gpus = 1 }}
metric = {{ name = "x", mode = "max" }}
[sweep]
method = "grid"
seeds = [0, 1]
[sweep.params]
x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
pause = [0.3]
"""


def cluster_host(project: Project, name: str = "rig", **extra: object) -> str:
    """A [hosts.NAME] for the test cluster, its runs under the project's state directory."""
    fields: dict[str, object] = {
        "kind": '"slurm"',
        "workdir": f'"{project.state_dir}"',
        "max_jobs": 50,
        "poll_s": 0.2,
        "forgotten_after_s": 3.0,
    } | {
        k: (f'"{v}"' if isinstance(v, str) and not v.startswith("[") else v)
        for k, v in extra.items()
    }
    return f"[hosts.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())


HEAD = '[engine]\nstate_dir = "runs"\nsample_interval_s = 0.2\ncancel_grace_s = 1.0\n'


@pytest.fixture
def cluster(short_tmp: Path) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(short_tmp / "slurm")
    yield cluster
    cluster.stop()


def cluster_project(folder: Path, cluster: SlurmCluster, *hosts: dict[str, object]) -> Project:
    """A project in `folder` whose hosts are the test cluster (each dict: a host's name and
    keys), reached directly (no login node)."""
    folder.mkdir()
    project = Project(folder, "")
    project.config_path.write_text(
        HEAD + "".join(cluster_host(project, **h) for h in hosts or ({},))  # type: ignore[arg-type]
    )
    project.extra_env = cluster.env
    return project


@pytest.fixture
def rig(short_tmp: Path, cluster: SlurmCluster) -> Iterator[Project]:
    """A project whose only host is the test cluster."""
    project = cluster_project(short_tmp / "project", cluster)
    yield project
    project.cleanup()


@pytest.fixture
async def rig_client(rig: Project) -> AsyncIterator[Client]:
    await rig.start_daemon()
    client = await connect(rig.config, start=False)
    yield client
    await client.close()


def kill_runs(project: Project) -> None:
    """SIGKILL the process group of every run the project started, by its wrapper's pid."""
    for pid in project.run_pids():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def job(project: Project, code: str, **kw: object) -> JobSpec:
    return JobSpec(argv=(sys.executable, "-c", code), cwd=str(project.folder), **kw)  # type: ignore[arg-type]


def make_sweep(project: Project) -> Path:
    (project.folder / "trainer.py").write_text(TRAINER)
    (project.folder / "experiments").mkdir()
    path = project.folder / "experiments" / "grid.toml"
    path.write_text(EXPERIMENT.format(python=sys.executable))
    (project.folder / ".gitignore").write_text("runs/\nslurm/\n*.log\n")
    subprocess.run(["git", "init", "-q"], cwd=project.folder, check=True)
    return path


async def test_a_grid_sweep_goes_in_as_one_job_array_and_every_point_is_stored_once(
    rig_client: Client, rig: Project, cluster: SlurmCluster
) -> None:
    client = rig_client
    result = await client.sweep(make_sweep(rig), cwd=str(rig.folder))
    assert result.trials == 20
    ids = [r.id for r in result.runs]

    async def waits_for_resources() -> bool:
        view = await client.queue()
        running = await client.runs(statuses=(RunStatus.RUNNING,))
        why = [e.reason for e in view.entries]
        return len(running) == 2 and any("waits in Slurm: Resources" in w for w in why)

    await wait_until(waits_for_resources, timeout=60, what="two running, the rest pending")
    ended = [await client.wait(i, 120) for i in ids]
    assert [r.status for r in ended] == [RunStatus.SUCCEEDED] * 20
    scripts = list((rig.state_dir / ".runyard" / "jobs").glob("*.sh"))
    assert len(scripts) == 1, scripts  # one sbatch for the whole sweep
    assert "--array" not in scripts[0].read_text()  # the options are sbatch's, not the script's
    for run in ended:
        detail = await client.run(run.id)
        counts = {m["key"]: m["count"] for m in detail.details["metrics"]}
        assert counts == {"x": 3, "gpu": 3}
        gpu = next(m for m in detail.details["metrics"] if m["key"] == "gpu")
        assert gpu["min"] == gpu["max"] and gpu["min"] in (0, 1)  # the GPU Slurm gave it
        [attempt] = detail.details["attempts"]
        assert attempt["batch_job"].split("_")[1].isdigit() and attempt["node"] == "localhost"
        log = (await client.log(run.id))[0].decode()
        assert log.count("@runyard") == 3
    points = await client.sql("SELECT count(*), count(DISTINCT (run_id, key, step)) FROM metrics_v")
    assert points["rows"][0] == [120, 120]  # 20 runs, 3 steps, 2 keys: none twice


async def test_a_run_waits_in_slurm_as_starting_with_the_reason_and_can_be_cancelled(
    rig_client: Client, rig: Project
) -> None:
    client = rig_client
    hold = "import time; time.sleep(30)"
    blockers = await client.submit([job(rig, hold, resources=Resources(gpus=1))] * 2)
    [third] = await client.submit([job(rig, hold, resources=Resources(gpus=1))])
    for b in blockers:
        await wait_until(
            lambda b=b: _status(client, b.id, RunStatus.RUNNING), what="the blockers to run"
        )

    async def pending() -> bool:
        view = await client.queue()
        return any(e.run.id == third.id and "Resources" in e.reason for e in view.entries)

    await wait_until(pending, what="the third GPU job to wait for Resources")
    assert (await client.run(third.id)).run.status is RunStatus.STARTING
    await client.hold(third.id)  # held in Slurm's queue, where it waits (JobHeldAdmin for root)

    async def held() -> bool:
        view = await client.queue()
        return any(e.run.id == third.id and "JobHeld" in e.reason for e in view.entries)

    await wait_until(held, what="Slurm to hold it")
    assert (await client.run(third.id)).run.held
    await client.release(third.id)
    await wait_until(pending, what="it to wait for Resources again")
    with pytest.raises(EngineError, match="sets its priority"):
        await client.set_priority(third.id, 5)
    await client.cancel(third.id)
    ended = await client.wait(third.id, 30)
    assert ended.status is RunStatus.CANCELLED
    running = blockers[0]
    await client.cancel(running.id)
    stopped = await client.wait(running.id, 30)
    assert stopped.status is RunStatus.CANCELLED and stopped.exit_code == 143  # SIGTERM
    hosts = (await client.hosts()).hosts
    sample = hosts[0].sample
    assert sample is not None and sample.cluster is not None
    assert sample.cluster.gpus_total == 2 and sample.cluster.nodes_down == 0


async def _status(client: Client, run_id: int, status: RunStatus) -> bool:
    return (await client.run(run_id)).run.status is status


async def test_a_requeued_job_is_a_new_attempt_with_the_reason_and_one_result(
    rig_client: Client, rig: Project, cluster: SlurmCluster
) -> None:
    client = rig_client
    code = "import time, os; print('attempt', os.environ['RUNYARD_ATTEMPT'], flush=True); time.sleep(3)"
    [run] = await client.submit(
        [job(rig, code, retry=RetryPolicy(attempts=3, backoff_s=0.1, on=("preempted",)))]
    )
    await wait_until(lambda: _status(client, run.id, RunStatus.RUNNING), what="it to run")
    batch = (await client.run(run.id)).details["attempts"][0]["batch_job"]
    cluster.run("scontrol", "requeue", batch)
    ended = await client.wait(run.id, 60)
    assert (ended.status, ended.attempt) == (RunStatus.SUCCEEDED, 2)
    [first, second] = (await client.run(run.id)).details["attempts"]
    assert first["failure_class"] == FailureClass.PREEMPTED
    assert "requeued by Slurm" in first["reason"]
    assert second["batch_job"] != batch
    log = (rig.state_dir / "runs" / str(run.id) / "attempt-1" / "output.log").read_text()
    assert log.count("attempt 1") == 1  # Slurm's second run of it did not run it again


async def test_a_time_limit_signals_the_run_to_checkpoint_and_the_next_attempt_resumes(
    short_tmp: Path, cluster: SlurmCluster
) -> None:
    # A one-minute limit with the warning 55 s before it (Slurm checks about every 30 s).
    project = cluster_project(
        short_tmp / "project", cluster, {"time": "1", "limit_signal": "USR1", "limit_signal_s": 55}
    )
    trainer = project.folder / "resume.py"
    trainer.write_text(
        "import os, signal, sys, time\n"
        "ckpt = os.path.join(os.environ['RUNYARD_CHECKPOINT_DIR'], 'step')\n"
        "start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0\n"
        "print('resumed from', start, flush=True)\n"
        "step = start\n"
        "def save(*_):\n"
        "    open(ckpt, 'w').write(str(step)); print('checkpoint at', step, flush=True)\n"
        "signal.signal(signal.SIGUSR1, save)\n"
        "while step < start + (100000 if start == 0 else 3):\n"
        '    step += 1; print(f\'@runyard {{"step": {step}, "s": {step}}}\', flush=True); time.sleep(0.2)\n'
    )
    try:
        await project.start_daemon()
        client = await connect(project.config, start=False)
        policy = RetryPolicy(attempts=2, backoff_s=0.1, on=("timeout",))
        [run] = await client.submit(
            [JobSpec(argv=(sys.executable, str(trainer)), cwd=str(project.folder), retry=policy)]
        )
        ended = await client.wait(run.id, 240)
        detail = await client.run(run.id)
        first = detail.details["attempts"][0]
        assert first["failure_class"] == FailureClass.TIMEOUT, first
        assert (ended.status, ended.attempt) == (RunStatus.SUCCEEDED, 2), ended.reason
        log = (await client.log(run.id))[0].decode()
        saved = int(log.split("resumed from ")[1].split()[0])
        assert saved > 0  # attempt 2 started where attempt 1's checkpoint left off
        await client.close()
    finally:
        project.cleanup()


async def test_a_lost_node_fails_the_attempt_as_host_lost_and_it_is_retried(
    short_tmp: Path,
) -> None:
    cluster = SlurmCluster(short_tmp / "slurm", node_timeout_s=3)
    project = cluster_project(short_tmp / "project", cluster)
    try:
        await project.start_daemon()
        client = await connect(project.config, start=False)
        code = "import time; time.sleep(2)"
        policy = RetryPolicy(attempts=3, backoff_s=0.1, on=("host_lost", "preempted"))
        [run] = await client.submit([job(project, code, retry=policy)])
        await wait_until(lambda: _status(client, run.id, RunStatus.RUNNING), what="it to run")
        cluster.kill_node_processes()  # the node dies: slurmd, its job steps and their runs
        kill_runs(project)
        cluster.until_node("down")
        cluster.start_node()
        ended = await client.wait(run.id, 90)
        first = (await client.run(run.id)).details["attempts"][0]
        assert first["failure_class"] in (FailureClass.HOST_LOST, FailureClass.PREEMPTED), (
            ended.reason,
            (await client.run(run.id)).details["events"],
            cluster.run("squeue", "-t", "all", "-O", "JobID,State,Reason,RestartCnt"),
        )
        assert "node" in first["reason"] or "requeued" in first["reason"], first["reason"]
        assert (ended.status, ended.attempt) == (RunStatus.SUCCEEDED, 2), ended.reason
        await client.close()
    finally:
        project.cleanup()
        cluster.stop()


async def test_the_daemon_killed_mid_array_and_slurmctld_restarted_lose_and_double_nothing(
    rig_client: Client, rig: Project, cluster: SlurmCluster
) -> None:
    client = rig_client
    result = await client.sweep(make_sweep(rig), cwd=str(rig.folder))
    ids = [r.id for r in result.runs]
    await wait_until(
        lambda: _status(client, ids[0], RunStatus.RUNNING), timeout=60, what="the array to run"
    )
    await client.close()
    rig.kill_daemon()
    cluster.kill("slurmctld", signal.SIGTERM)  # restarted, as `systemctl restart` does it:
    cluster.start_controller()  # it resumes its saved jobs
    await rig.start_daemon()
    client = await connect(rig.config, start=False)
    try:
        ended = [await client.wait(i, 180) for i in ids]
        assert [r.status for r in ended] == [RunStatus.SUCCEEDED] * 20, {r.reason for r in ended}
        points = await client.sql(
            "SELECT count(*), count(DISTINCT (run_id, key, step)) FROM metrics_v"
        )
        assert points["rows"][0] == [120, 120]
        assert len(list((rig.state_dir / ".runyard" / "jobs").glob("*.sh"))) == 1  # never twice
    finally:
        await client.close()


async def test_a_job_slurm_forgets_without_an_exit_code_is_lost_after_the_grace(
    rig_client: Client, rig: Project, cluster: SlurmCluster
) -> None:
    client = rig_client
    [run] = await client.submit([job(rig, "import time; time.sleep(60)")])
    await wait_until(lambda: _status(client, run.id, RunStatus.RUNNING), what="it to run")
    kill_runs(rig)  # its processes die without a word, and Slurm forgets the job
    cluster.kill("slurmctld")
    cluster.start_controller(fresh=True)
    ended = await client.wait(run.id, 60)
    assert ended.status is RunStatus.LOST
    assert "no longer knows job" in (ended.reason or "") and "no exit code" in (ended.reason or "")


async def test_host_check_names_the_failing_step_and_a_refused_submission_fails_the_run(
    short_tmp: Path,
) -> None:
    """On a cluster that enforces accounts and QOS (slurmdbd): host check fails at the step
    that is wrong, and a run sent to a host whose account Slurm refuses fails with Slurm's
    words, while the other host's run succeeds."""
    cluster = SlurmCluster(short_tmp / "slurm", accounting=True)
    project = cluster_project(
        short_tmp / "project",
        cluster,
        {"name": "good", "account": ACCOUNT, "qos": "normal"},
        {"name": "nopart", "account": ACCOUNT, "partition": "nosuch"},
        {"name": "badaccount", "account": "nosuch"},
        {"name": "badqos", "account": ACCOUNT, "qos": "nosuch"},
    )
    try:
        good = project.engine("host", "check", "good")
        assert good.returncode == 0, good.stdout + good.stderr
        assert "ok    slurm" in good.stdout and "ok    submit" in good.stdout
        for host, step, said in (
            ("nopart", "partition", ""),
            ("badaccount", "submit", "Invalid account"),
            ("badqos", "submit", "Invalid qos"),
        ):
            bad = project.engine("host", "check", host)
            assert bad.returncode != 0 and f"FAIL  {step}" in bad.stdout, bad.stdout
            assert said in bad.stdout
        await project.start_daemon()
        client = await connect(project.config, start=False)
        refused, fine = await client.submit(
            [job(project, "print(1)", host="badaccount"), job(project, "print(1)", host="good")]
        )
        refused, fine = await client.wait(refused.id, 60), await client.wait(fine.id, 60)
        assert fine.status is RunStatus.SUCCEEDED, fine.reason
        assert refused.status is RunStatus.FAILED, refused.reason
        assert "Invalid account" in (refused.reason or ""), refused.reason
        await client.close()
    finally:
        project.cleanup()
        cluster.stop()


def test_sbatch_options_and_the_batch_script_quote_every_value() -> None:
    from engine.core.slurm import batch_script, sbatch_options
    from engine.model import HostSpec

    host = HostSpec(name="c", kind="slurm", partition="gpu", time="4:00:00", account="lab")
    options = sbatch_options(host, Resources(cpus=1.5, mem_gb=2, gpus=2), "ry-x-1-1", 5, 2)
    assert "--array=0-4%2" in options and "--gres=gpu:2" in options
    assert "--cpus-per-task=2" in options and "--mem=2048M" in options
    assert "--signal=B:USR1@120" in options and "--partition=gpu" in options
    script = batch_script(
        [("/w/runs/1/attempt-1", ["/w/runs/1/attempt-1", "--", "echo", "$(x); y"])],
        "/w/wrapper.sh",
        None,
        FILES,
    )
    assert "'$(x); y'" in script  # quoted: never run by the shell


def test_an_array_task_makes_its_own_folders_and_writes_its_job_id(tmp_path: Path) -> None:
    """Submitting makes no folder: each task makes its attempt's and the run's kept folders
    as it starts, writes its job id there, and runs its own attempt only."""
    from engine.core.slurm import batch_script

    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text('echo "ran $*"\n')
    folders = [str(tmp_path / f"runs/{i}/attempt-1") for i in (1, 2)]
    script = tmp_path / "job.sh"
    script.write_text(
        batch_script(
            [(f, ["--", "x y", str(i)]) for i, f in enumerate(folders)], str(wrapper), None, FILES
        )
    )
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_JOB_ID": "812", "SLURM_ARRAY_TASK_ID": "1"}
    subprocess.run(["bash", str(script)], env=env, check=True)
    assert not Path(folders[0]).exists()
    assert (Path(folders[1]) / "slurm_job").read_text() == "812_1"
    assert (Path(folders[1]) / "output.log").read_text() == "ran -- x y 1\n"
    assert {p.name for p in Path(folders[1]).parent.iterdir()} == {"attempt-1", *FILES.kept}
    assert oct(Path(folders[1]).stat().st_mode & 0o777) == "0o700"
    subprocess.run(
        ["bash", str(script)], env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "9"}, check=True
    )
    assert (Path(folders[0]) / "slurm_job").read_text() == "9"


def login_project(folder: Path, cluster: SlurmCluster, lab: SshLab, **extra: object) -> Project:
    """A project whose host `rig` is the test cluster behind the lab's first sshd as its
    login node."""
    login = lab.hosts[0]
    folder.mkdir()
    project = Project(folder, "")
    fields = {
        "kind": "slurm",
        "login": login.address,
        "port": login.port,
        "user": getpass.getuser(),
        "identity": str(lab.client_key),
        "known_hosts": str(lab.known_hosts),
        "workdir": str(login.workdir),
        "setup": f"export SLURM_CONF={cluster.conf}",
        "poll_s": 0.2,
        "keepalive_s": 0.5,
        "max_jobs": 50,
    } | extra
    body = "".join(
        f"{k} = {v}\n" if isinstance(v, int | float | list) else f'{k} = "{v}"\n'
        for k, v in fields.items()
    )
    project.config_path.write_text(HEAD + "[hosts.rig]\n" + body)
    return project


async def test_a_sweep_through_the_login_node_over_ssh_survives_the_link_dropping(
    short_tmp: Path, cluster: SlurmCluster
) -> None:
    """The daemon on the laptop, the cluster behind an sshd "login node" on 127.0.0.2: the
    sweep is submitted, followed and finished over SSH; the link dropping mid-run touches
    no job, and every point is stored once."""
    lab = SshLab(short_tmp / "lab", 1)
    login = lab.hosts[0]
    project = login_project(short_tmp / "project", cluster, lab)
    try:
        await project.start_daemon()
        client = await connect(project.config, start=False)
        result = await client.sweep(make_sweep(project), cwd=str(project.folder))
        ids = [r.id for r in result.runs]
        await wait_until(
            lambda: _status(client, ids[0], RunStatus.RUNNING), timeout=60, what="a trial to run"
        )
        login.kill()  # the link drops; Slurm runs on
        await wait_until(
            lambda: _status(client, ids[0], RunStatus.UNREACHABLE), timeout=30, what="unreachable"
        )
        login.start()
        ended = [await client.wait(i, 180) for i in ids]
        assert [r.status for r in ended] == [RunStatus.SUCCEEDED] * 20, {r.reason for r in ended}
        points = await client.sql(
            "SELECT count(*), count(DISTINCT (run_id, key, step)) FROM metrics_v"
        )
        assert points["rows"][0] == [120, 120]
        assert len(list((login.workdir / ".runyard" / "jobs").glob("*.sh"))) == 1
        assert list((login.workdir / "snapshots").iterdir())  # the code went up once
        await client.close()
    finally:
        project.cleanup()
        lab.stop()


async def test_a_thousand_trials_over_the_login_node_are_one_sbatch(
    short_tmp: Path, cluster: SlurmCluster
) -> None:
    """Held in Slurm's queue (`--hold`), a 1,000-trial sweep is submitted over SSH in one
    sbatch, each attempt knows its array task, and cancelling the sweep ends every job.
    (The attempts' folders go to the login node in a file, not on a command line, which
    at this size broke the SSH connection.) A daemon restarted meanwhile adopts them all
    from squeue and the submission's task list, and submits none again."""
    lab = SshLab(short_tmp / "lab", 1)
    project = login_project(short_tmp / "project", cluster, lab, max_jobs=1000, poll_s=1.0)
    project.config_path.write_text(project.config_path.read_text() + 'sbatch_args = ["--hold"]\n')
    try:
        await project.start_daemon()
        client = await connect(project.config, start=False)
        path = make_sweep(project)
        path.write_text(
            EXPERIMENT.format(python=sys.executable).replace(
                "x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", f"x = {list(range(500))}"
            )
        )
        result = await client.sweep(path, cwd=str(project.folder))
        assert result.trials == 1000

        async def all_known() -> bool:
            out = cluster.run("squeue", "-h", "-r", "-o", "%i")
            return len(out.split()) == 1000

        await wait_until(all_known, timeout=60, what="Slurm to know every trial")

        async def all_held() -> bool:
            view = await client.queue(limit=2000)
            return len(view.entries) == 1000 and all("JobHeld" in e.reason for e in view.entries)

        await wait_until(all_held, what="the queue to say why each waits")
        [last] = (await client.run(result.runs[-1].id)).details["attempts"]
        assert last["batch_job"].endswith("_999")
        # Submitting made no folder on the shared file system: each job makes its own.
        assert not (lab.hosts[0].workdir / "runs").exists()
        await client.close()
        project.kill_daemon()
        await project.start_daemon()
        client = await connect(project.config, start=False)
        await wait_until(all_held, timeout=60, what="the restarted daemon to adopt every job")
        assert len(list((lab.hosts[0].workdir / ".runyard" / "jobs").glob("*.sh"))) == 1
        await client.cancel_sweep(result.sweep)
        ended = [await client.wait(r.id, 120) for r in result.runs]
        assert {r.status for r in ended} == {RunStatus.CANCELLED}
        assert cluster.run("squeue", "-h", "-r", "-o", "%i").split() == []
        await client.close()
    finally:
        project.cleanup()
        lab.stop()


ASHA = """\
name = "asha"
command = "{python} steps.py"
metric = {{ name = "score", mode = "max" }}
[sweep]
method = "grid"
max_concurrent = 1
[sweep.params]
quality = [0.9, 0.8, 0.1]
[sweep.early_stop]
method = "asha"
min_steps = 2
reduction_factor = 2
"""


async def test_an_asha_sweep_on_the_cluster_prunes_through_scancel(
    rig_client: Client, rig: Project
) -> None:
    client = rig_client
    (rig.folder / "steps.py").write_text(STEPS)
    path = rig.folder / "asha.toml"
    path.write_text(ASHA.format(python=sys.executable))
    result = await client.sweep(path, cwd=str(rig.folder))
    ended = {r.params["quality"]: await client.wait(r.id, 120) for r in result.runs}
    assert ended[0.9].status is RunStatus.SUCCEEDED
    weak = ended[0.1]
    assert weak.status is RunStatus.PRUNED and (weak.reason or "").startswith("pruned by asha")
    assert "done" not in (await client.log(weak.id))[0].decode()  # stopped, not run to its end
    script = next((rig.state_dir / ".runyard" / "jobs").glob("*.sh"))
    assert len(script.read_text().split(") dir=")) == 4  # the three trials in one array


def test_squeue_lines_are_jobs_and_slurms_ends_are_failure_classes() -> None:
    from engine.core.slurm import end_cause, parse_squeue

    jobs = parse_squeue(
        "812|3|RUNNING|None|0|n7|ry-ab12cd-5-1|\n"
        "813|N/A|PENDING|QOSMaxJobsPerUserLimit|0||ry-ab12cd-9-1|\n"
        "814|N/A|TIMEOUT|TimeLimit|0|n2|ry-ab12cd-10-1|\n"
        "garbage\n"
    )
    assert [(j.job_id, j.state, j.node) for j in jobs] == [
        ("812_3", "RUNNING", "n7"),
        ("813", "PENDING", None),
        ("814", "TIMEOUT", "n2"),
    ]
    assert jobs[1].pending and not jobs[1].ended and jobs[2].ended
    causes = {
        state: end_cause(msgspec.structs.replace(jobs[2], state=state))
        for state in ("TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "COMPLETED")
    }
    assert {s: c[0] if c else None for s, c in causes.items()} == {
        "TIMEOUT": FailureClass.TIMEOUT,
        "NODE_FAIL": FailureClass.HOST_LOST,
        "PREEMPTED": FailureClass.PREEMPTED,
        "OUT_OF_MEMORY": FailureClass.OOM,
        "COMPLETED": None,
    }
    requeued = end_cause(msgspec.structs.replace(jobs[0], state="PENDING", restarts=1))
    assert requeued is not None and requeued[0] is FailureClass.PREEMPTED
