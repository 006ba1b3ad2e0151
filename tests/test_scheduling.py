"""Scheduling with a real daemon: two local hosts with different tags and work folders, one
declaring two GPUs (no GPU is here), and a route."""

from __future__ import annotations

import itertools
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.client import Client, EngineError, connect
from engine.model import JobSpec, Resources, RetryPolicy, RunStatus

from .conftest import Project, wait_until

HOSTS = """\
[engine]
state_dir = "runs"
sample_interval_s = 0.2
cancel_grace_s = 1.0

[hosts.laptop]
kind = "local"
max_jobs = {laptop_jobs}
tags = ["cpu", "sklearn"]
workdir = "laptop-work"

[hosts.gpu-box]
kind = "local"
max_jobs = 4
tags = ["cuda", "xgboost"]
workdir = "gpu-work"
gpus = [{{ name = "Fake RTX 4090", memory_gb = 24 }}, {{ name = "Fake RTX 4090", memory_gb = 24 }}]

[[routes]]
match = {{ model_type = "XGBoost" }}
prefer = ["gpu-box"]
fallback = ["laptop"]
"""
SHOW_GPUS = "echo gpus=[$CUDA_VISIBLE_DEVICES]"


@pytest.fixture
def two_hosts(short_tmp: Path) -> Iterator[Project]:
    project = Project(short_tmp, HOSTS.format(laptop_jobs=2))
    yield project
    project.cleanup()


@pytest.fixture
async def engine(two_hosts: Project) -> AsyncIterator[Client]:
    await two_hosts.start_daemon()
    client = await connect(two_hosts.config, start=False)
    yield client
    await client.close()


def job(project: Project, script: str, **kw) -> JobSpec:  # type: ignore[no-untyped-def]
    return JobSpec(argv=("sh", "-c", script), cwd=str(project.folder), **kw)


async def output(client: Client, run_id: int, attempt: int | None = None) -> str:
    return (await client.log(run_id, attempt=attempt))[0].decode()


async def test_jobs_route_pack_onto_gpus_and_fall_back(engine: Client, two_hosts: Project) -> None:
    xgb = [
        job(
            two_hosts,
            f"{SHOW_GPUS}; sleep 2",
            model_type="XGBoost",
            resources=Resources(gpus=1, gpu_mem_gb=10),
        )
        for _ in range(3)
    ]
    glm = job(two_hosts, SHOW_GPUS, model_type="GLM", requires=("sklearn",))
    runs = await engine.submit([*xgb, glm])
    done = [await engine.wait(r.id, 30) for r in runs]
    assert [r.host for r in done] == ["gpu-box", "gpu-box", "gpu-box", "laptop"]
    # two 10 GB jobs share GPU 0 (24 GB); the third goes to GPU 1; the CPU job sees no GPU
    assert [r.gpus for r in done] == [(0,), (0,), (1,), ()]
    assert [await output(engine, r.id) for r in done] == [
        "gpus=[0]\n",
        "gpus=[0]\n",
        "gpus=[1]\n",
        "gpus=[]\n",
    ]
    assert done[0].run_dir.startswith(str(two_hosts.folder / "gpu-work"))
    assert done[3].run_dir.startswith(str(two_hosts.folder / "laptop-work"))
    detail = await engine.run(runs[0].id)
    assert detail.details["events"][1]["reason"] == "GPU 0 on gpu-box (route: preferred hosts)"
    # with the preferred host out of use, the route falls back
    await engine.set_host("gpu-box", enabled=False, reason="maintenance")
    [fallback] = await engine.submit([job(two_hosts, "true", model_type="XGBoost")])
    fallback = await engine.wait(fallback.id, 30)
    assert fallback.host == "laptop"
    assert (
        "preferred hosts are down: fallback"
        in (await engine.run(fallback.id)).details["events"][1]["reason"]
    )
    states = {h.name: (h.state, h.reason) for h in (await engine.hosts()).hosts}
    assert states["gpu-box"] == ("disabled", "maintenance")


async def test_a_job_that_cannot_fit_is_refused_or_waits_saying_why(
    engine: Client, two_hosts: Project
) -> None:
    """A job no host could ever run is refused at submission, with each host's reason; with
    --wait-for-host it is queued, and the queue says why it waits."""
    for never in (
        job(two_hosts, "true", resources=Resources(gpus=1, gpu_mem_gb=30)),
        job(two_hosts, "true", requires=("tpu",)),
        job(two_hosts, "true", resources=Resources(cpus=4096)),
    ):
        with pytest.raises(EngineError, match="no host can ever run this job") as refused:
            await engine.submit([never])
        assert "--wait-for-host" in str(refused.value)
    (two_hosts.folder / "big.toml").write_text(
        'name = "big"\ncommand = "true"\nresources = { gpus = 1, gpu_mem_gb = 30 }\n'
        "[sweep.params]\nx = [1, 2]\n"
    )
    refused = two_hosts.engine("sweep", "big.toml")
    assert refused.returncode == 1 and "no host can ever run this job" in refused.stderr
    queued = two_hosts.engine("sweep", "big.toml", "--wait-for-host")
    assert queued.returncode == 0, queued.stderr
    assert await engine.cancel_sweep(queued.stdout.strip())
    cli = two_hosts.engine("run", "--gpus", "1", "--gpu-mem", "30", "--", "true")
    assert cli.returncode == 1
    assert (
        "no host can ever run this job (laptop: needs 1 GPU(s), has 0; gpu-box: needs 1 GPU(s)"
        " of 30 GB, the largest has 24.0 GB)" in cli.stderr
    )
    [big, odd] = await engine.submit(
        [
            job(
                two_hosts,
                "true",
                resources=Resources(gpus=1, gpu_mem_gb=30),
                wait_for_host=True,
            ),
            job(two_hosts, "true", requires=("tpu",), wait_for_host=True),
        ]
    )
    why = {e.run.id: e.reason for e in (await engine.queue()).entries}
    assert why[big.id] == (
        "waits: laptop: needs 1 GPU(s), has 0; gpu-box: needs 1 GPU(s) with 30 GB free; "
        "the roomiest has 24.0 GB free"
    )
    assert why[odd.id] == "waits: laptop: lacks tags tpu; gpu-box: lacks tags tpu"
    plan = two_hosts.engine("plan", str(big.id))
    assert plan.returncode == 0 and "the roomiest has 24.0 GB free" in plan.stdout


async def test_failures_retry_by_class_with_exponential_backoff(
    engine: Client, two_hosts: Project
) -> None:
    oom = "echo 'RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB'; exit 1"
    policy = RetryPolicy(attempts=3, backoff_s=0.4, factor=2.0)
    [run] = await engine.submit([job(two_hosts, oom, retry=policy)])
    done = await engine.wait(run.id, 60)
    assert (done.status, done.failure_class, done.attempt) == (RunStatus.FAILED, "oom", 3)
    assert done.reason.endswith("gave up after 3 attempts")
    attempts = (await engine.run(run.id)).details["attempts"]
    assert [(a["attempt"], a["status"], a["failure_class"]) for a in attempts] == [
        (1, "failed", "oom"),
        (2, "failed", "oom"),
        (3, "failed", "oom"),
    ]
    gaps = [b["started_at"] - a["ended_at"] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8, gaps  # backoff, doubling
    assert "retry 2/3 in 0.4s" in attempts[0]["reason"]
    # each attempt has its own output
    assert "CUDA out of memory" in await output(engine, run.id, attempt=2)


async def test_errors_are_not_retried_unless_asked_and_a_retry_can_succeed(
    engine: Client, two_hosts: Project
) -> None:
    [plain] = await engine.submit([job(two_hosts, "exit 2")])
    assert (await engine.wait(plain.id, 30)).attempt == 1
    flaky = "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 2 ]"
    [run] = await engine.submit(
        [job(two_hosts, flaky, retry=RetryPolicy(backoff_s=0.1, on=("error",)))]
    )
    done = await engine.wait(run.id, 30)
    assert (done.status, done.attempt) == (RunStatus.SUCCEEDED, 3)
    [killed] = await engine.submit(
        [job(two_hosts, "kill -9 $$", retry=RetryPolicy(attempts=2, backoff_s=0.1, on=("killed",)))]
    )
    done = await engine.wait(killed.id, 30)
    assert (done.failure_class, done.attempt, done.reason) == (
        "killed",
        2,
        "killed by SIGKILL; gave up after 2 attempts",
    )


async def test_an_oom_retry_moves_to_the_roomiest_gpu(engine: Client, two_hosts: Project) -> None:
    [hog] = await engine.submit(
        [job(two_hosts, "sleep 30", resources=Resources(gpus=1, gpu_mem_gb=16))]
    )
    await wait_until(lambda: _status(engine, hog.id, RunStatus.RUNNING), what="the hog to run")
    oom = f"{SHOW_GPUS}; echo 'torch.OutOfMemoryError: CUDA out of memory'; exit 1"
    [run] = await engine.submit(
        [
            job(
                two_hosts,
                oom,
                resources=Resources(gpus=1, gpu_mem_gb=4),
                retry=RetryPolicy(attempts=2, backoff_s=0.1),
            )
        ]
    )
    await engine.wait(run.id, 30)
    attempts = (await engine.run(run.id)).details["attempts"]
    assert [a["gpus"] for a in attempts] == [[0], [1]]  # best fit beside the hog, then the roomiest
    await engine.cancel(hog.id)


async def _status(client: Client, run_id: int, status: RunStatus) -> bool:
    return (await client.run(run_id)).run.status is status


async def test_queue_priority_hold_release_and_sweep_limits(
    engine: Client, two_hosts: Project
) -> None:
    blockers = await engine.submit([job(two_hosts, "sleep 30", host="laptop") for _ in range(2)])
    for b in blockers:
        await wait_until(
            lambda b=b: _status(engine, b.id, RunStatus.RUNNING), what="blockers to run"
        )
    a, b, c = await engine.submit([job(two_hosts, "true", host="laptop", name=n) for n in "abc"])
    await engine.set_priority(c.id, 5)
    await engine.hold(a.id)
    entries = (await engine.queue()).entries
    assert [(e.run.name, e.run.priority, e.reason) for e in entries] == [
        ("c", 5, "waits: laptop: all 2 slots busy (requested host)"),
        ("a", 0, "held"),
        ("b", 0, "waits: laptop: all 2 slots busy (requested host)"),
    ]
    events = (await engine.run(a.id)).details["events"]
    assert (events[-1]["from"], events[-1]["to"], events[-1]["reason"]) == (
        "queued",
        "queued",
        "held by user",
    )
    await engine.cancel(blockers[0].id)
    assert (await engine.wait(c.id, 30)).status is RunStatus.SUCCEEDED  # priority first
    assert (await engine.wait(b.id, 30)).status is RunStatus.SUCCEEDED
    assert (await engine.run(a.id)).run.status is RunStatus.QUEUED  # still held
    await engine.release(a.id)
    assert (await engine.wait(a.id, 30)).status is RunStatus.SUCCEEDED
    await engine.cancel(blockers[1].id)
    # a sweep with max_concurrent=2 never runs more than two at once; cancel --sweep ends it
    sweep = await engine.submit(
        [job(two_hosts, "sleep 30", sweep="s1", max_concurrent=2) for _ in range(4)]
    )
    await wait_until(lambda: _count(engine, "s1", RunStatus.RUNNING, 2), what="two sweep runs")
    why = {e.run.id: e.reason for e in (await engine.queue()).entries}
    assert why[sweep[2].id] == "sweep s1 runs its max_concurrent=2"
    cancelled = two_hosts.engine("cancel", "--sweep", "s1")
    assert cancelled.returncode == 0 and cancelled.stderr.count("cancel requested") == 4
    for r in sweep:
        assert (await engine.wait(r.id, 30)).status is RunStatus.CANCELLED


async def _count(client: Client, sweep: str, status: RunStatus, n: int) -> bool:
    runs = [r for r in await client.runs(limit=100) if r.sweep == sweep and r.status is status]
    return len(runs) == n


async def test_queue_and_reservations_survive_a_restart_exactly(two_hosts: Project) -> None:
    await two_hosts.start_daemon()
    client = await connect(two_hosts.config, start=False)
    [gpu_run] = await client.submit(
        [job(two_hosts, "sleep 30", resources=Resources(gpus=1, gpu_mem_gb=20))]
    )
    await wait_until(lambda: _status(client, gpu_run.id, RunStatus.RUNNING), what="the GPU run")
    blockers = await client.submit([job(two_hosts, "sleep 30", host="laptop") for _ in range(2)])
    queued = await client.submit(
        [job(two_hosts, "true", host="laptop", name=f"q{i}") for i in range(3)]
    )
    await client.set_priority(queued[2].id, 3)
    await client.hold(queued[0].id)
    before = [
        (e.run.id, e.run.priority, e.run.held, e.reason) for e in (await client.queue()).entries
    ]
    await client.close()
    two_hosts.kill_daemon(signal.SIGKILL)
    await two_hosts.start_daemon()
    client = await connect(two_hosts.config, start=False)
    try:
        after = [
            (e.run.id, e.run.priority, e.run.held, e.reason) for e in (await client.queue()).entries
        ]
        assert after == before
        gpu_box = next(h for h in (await client.hosts()).hosts if h.name == "gpu-box")
        # the reattached run holds GPU 0
        assert [(g.reserved_mb, g.runs) for g in gpu_box.gpus] == [
            (20 * 1024, (gpu_run.id,)),
            (0, ()),
        ]
        assert (await client.run(gpu_run.id)).run.status is RunStatus.RUNNING
        # the reservation still counts: a 10 GB job cannot join it on GPU 0 and goes to GPU 1
        [next_run] = await client.submit(
            [job(two_hosts, SHOW_GPUS, resources=Resources(gpus=1, gpu_mem_gb=10))]
        )
        assert (await client.wait(next_run.id, 30)).gpus == (1,)
        for r in [gpu_run, *blockers]:
            await client.cancel(r.id)
    finally:
        await client.close()


async def test_the_queue_is_paged_in_planning_order_with_its_total(
    engine: Client, two_hosts: Project
) -> None:
    blockers = await engine.submit([job(two_hosts, "sleep 30", host="laptop") for _ in range(2)])
    for b in blockers:  # the laptop's two slots are taken: what follows stays queued
        await wait_until(lambda b=b: _status(engine, b.id, RunStatus.RUNNING), what="blockers")
    runs = await engine.submit(
        [job(two_hosts, "true", host="laptop", priority=p) for p in (0, 5, 0, 9)]
    )
    ids = [r.id for r in runs]
    first = await engine.queue(limit=2)
    assert first.total == 4
    assert [e.run.id for e in first.entries] == [ids[3], ids[1]]  # priority 9, then 5
    whole = await engine.queue()
    assert [e.run.id for e in whole.entries] == [ids[3], ids[1], ids[0], ids[2]]
    shown = two_hosts.engine("queue", "--limit", "1")
    assert shown.returncode == 0 and "1 of 4 queued shown" in shown.stdout
    assert shown.stdout.splitlines()[1].split()[0] == str(ids[3])
    assert len(two_hosts.engine("queue", "--json").stdout) > 0
    bad = two_hosts.engine("queue", "--limit", "-1")
    assert bad.returncode != 0 and "limit must be 0 or more" in bad.stderr
    for run in [*runs, *blockers]:  # the queued first: none starts meanwhile
        await engine.cancel(run.id)
