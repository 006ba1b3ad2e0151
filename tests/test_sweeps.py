"""Sweeps through the real daemon: trials from a code snapshot, parameters, hostile values."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.client import Client
from engine.model import RunStatus

from .conftest import Project, wait_until

TRAIN = """\
import json, os, sys
params, seed = json.loads(os.environ["RUNYARD_PARAMS"]), int(os.environ["RUNYARD_SEED"])
print("@runyard", json.dumps({"step": 0, "score": params["lr"] * 10 + seed * 0.1 + len(params["tag"]) * 0.01}))
print("VERSION", 1, "ARGV", json.dumps(sys.argv[1:]), "PARAMS", os.environ["RUNYARD_PARAMS"])
"""
EXPERIMENT = """\
name = "toy"
command = "{python} train.py --tag {{tag}} --lr {{lr}} --seed {{seed}}"
metric = {{ name = "score", mode = "max" }}
[sweep]
method = "grid"
seeds = [0, 1]
[sweep.params]
tag = ["plain", "'; touch PWNED", "$(touch PWNED2)"]
lr = {{ low = 0.1, high = 0.2, step = 0.1 }}
"""


def make_project(project: Project) -> Path:
    (project.folder / "train.py").write_text(TRAIN)
    (project.folder / "experiments").mkdir()
    exp = project.folder / "experiments" / "toy.toml"
    exp.write_text(EXPERIMENT.format(python=sys.executable))
    (project.folder / ".gitignore").write_text("runs/\n*.log\n")
    subprocess.run(["git", "init", "-q"], cwd=project.folder, check=True)
    return exp


async def test_trials_run_from_the_snapshot_taken_at_submission(
    client: Client, daemon: Project
) -> None:
    exp = make_project(daemon)
    blockers = await client.submit(
        [daemon_job(daemon, "sleep 30") for _ in range(4)]  # every slot busy: trials must queue
    )
    result = await client.sweep(exp, cwd=str(daemon.folder))
    assert result.trials == 3 * 2 * 2 and result.sweep == "toy-1"
    (daemon.folder / "train.py").write_text(
        TRAIN.replace('"VERSION", 1', '"VERSION", 2')
    )  # edited later
    for b in blockers:
        await client.cancel(b.id)
    ended = [await client.wait(r.id, 60) for r in result.runs]
    assert [r.status for r in ended] == [RunStatus.SUCCEEDED] * 12
    outputs = [(await client.log(r.id))[0].decode() for r in ended]
    assert all("VERSION 1 " in out for out in outputs), outputs[0]  # the snapshot, not the edit
    # parameters arrive as single arguments and as RUNYARD_PARAMS; nothing reached a shell
    argvs = [json.loads(out.split("ARGV ")[1].split(" PARAMS")[0]) for out in outputs]
    assert argvs[2][:2] == ["--tag", "plain"] and argvs[4][:2] == ["--tag", "'; touch PWNED"]
    assert {a[1] for a in argvs} == {"plain", "'; touch PWNED", "$(touch PWNED2)"}
    assert json.loads(outputs[0].split("PARAMS ")[1]) == {"tag": "plain", "lr": 0.1}
    assert not list(daemon.folder.rglob("PWNED*"))
    detail = await client.run(ended[0].id)
    assert detail.details["manifest"]["snapshot"] and detail.run.sweep == "toy-1"
    assert detail.run.params == {"tag": "plain", "lr": 0.1}  # stored, not only passed on
    assert detail.run.cwd.startswith(str(daemon.state_dir / "snapshots"))
    [sweep] = await client.sweeps()
    assert (sweep.id, sweep.trials, sweep.counts) == ("toy-1", 12, {"succeeded": 12})
    status = daemon.engine("sweep-status", "toy-1")
    assert status.returncode == 0 and "12 succeeded" in status.stderr
    assert len(status.stdout.splitlines()) == 1 + 12  # header and every run of the sweep
    assert len(await client.runs(sweep="toy-1", limit=None)) == 12
    # the best configuration by the experiment's metric, mean and spread over the seeds
    best = await client.best("toy-1")
    top = best["configs"][0]
    assert (best["metric"], best["mode"], len(best["configs"])) == ("score", "max", 6)
    assert top["params"] == {"tag": "$(touch PWNED2)", "lr": 0.2} and top["n"] == 2
    assert top["mean"] == pytest.approx(2.0 + 0.05 + 0.15) and top["std"] == pytest.approx(
        0.1 / 2**0.5
    )
    shown = daemon.engine("best", "toy-1")
    assert shown.returncode == 0 and shown.stdout.startswith(
        "best of 6 configs by score (max, each run's last value): 2.2 ± 0.0707"
    )
    # reproduce: the same snapshot, command, params and seed give the same output
    again_run = await client.reproduce(top["best_run"])
    redone = await client.wait(again_run.id, 30)
    original = await client.run(top["best_run"])
    assert (redone.argv, redone.cwd, redone.seed, redone.params) == (
        original.run.argv,
        original.run.cwd,
        original.run.seed,
        original.run.params,
    )
    assert (await client.log(redone.id))[0] == (await client.log(original.run.id))[0]
    manifest = (await client.run(redone.id)).details["manifest"]
    assert manifest["reproduces"] == original.run.id and manifest["snapshot"] == sweep.snapshot
    # the same code again gives the same snapshot; the edit gives a new one
    again = await client.sweep(exp, {"tag": '["x"]', "seeds": "[5]"}, cwd=str(daemon.folder))
    assert again.sweep == "toy-2" and again.trials == 2
    await wait_until(lambda: _done(client, again.runs), what="the second sweep")
    snaps = {s.id: s.snapshot for s in await client.sweeps()}
    assert snaps["toy-1"] != snaps["toy-2"]


def daemon_job(project: Project, script: str):  # type: ignore[no-untyped-def]
    from engine.model import JobSpec

    return JobSpec(argv=("sh", "-c", script), cwd=str(project.folder))


async def _done(client: Client, runs) -> bool:  # type: ignore[no-untyped-def]
    return all([(await client.run(r.id)).run.status.terminal for r in runs])


def test_the_sweep_cli_dry_run_and_errors(project: Project) -> None:
    exp = make_project(project)
    dry = project.engine("sweep", str(exp), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would run: 12 trials: 12 → local" in dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("toy-1-000-s0  ") and "… and 2 more" in lines
    assert project.engine("sweeps", "--json").stdout.strip() == "[]"  # a dry run queues nothing
    tpe = exp.read_text().replace('"grid"', '"tpe"\ntrials = 5')
    exp.write_text(tpe + '[sweep.early_stop]\nmethod = "asha"\n')
    adaptive = project.engine("sweep", str(exp), "--dry-run")
    assert adaptive.returncode == 0, adaptive.stderr
    assert adaptive.stderr.startswith("would run: 10 trials: ")  # 5 sampled configs, 2 seeds each
    assert adaptive.stdout.splitlines()[0].startswith("toy-1-000-s0  ")
    exp.write_text(tpe.replace('"tpe"', '"grid"'))
    bad = project.engine("sweep", str(exp), "--set", "depth=3")
    assert bad.returncode == 2 and "--set depth: not a parameter of this experiment" in bad.stderr
    exp.write_text(exp.read_text().replace("--lr {lr}", "--lr {rate}"))
    bad = project.engine("sweep", str(exp))
    assert bad.returncode == 2 and "toy.toml:2: command: unknown parameter {rate}" in bad.stderr


def test_an_ensemble_previews_its_routing_over_two_hosts(short_tmp: Path) -> None:
    hosts = (
        '[engine]\nstate_dir = "runs"\n'
        '[hosts.laptop]\nkind = "local"\ntags = ["cpu"]\n'
        '[hosts.gpu-box]\nkind = "local"\ngpus = [{ memory_gb = 24 }]\n'
        '[[routes]]\nmatch = { model_type = "XGBoost" }\nprefer = ["gpu-box"]\nfallback = ["laptop"]\n'
        '[[routes]]\nmatch = { model_type = "MLP" }\nprefer = ["gpu-box"]\nfallback = ["laptop"]\n'
    )
    project = Project(short_tmp, hosts)
    try:
        ensemble = Path(__file__).resolve().parent.parent / "experiments" / "ensemble.toml"
        dry = project.engine("sweep", str(ensemble), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stderr.startswith("would run: 24 trials: 12 → laptop, 12 → gpu-box (")
        assert "xgb: gpu-box (route: preferred hosts)" in dry.stderr
    finally:
        project.cleanup()


async def test_a_sweep_goes_on_after_kill_9_and_runs_every_trial_exactly_once(
    project: Project,
) -> None:
    import signal

    from engine.client import connect

    exp = make_project(project)
    slow = TRAIN.replace('print("VERSION"', 'import time; time.sleep(0.3); print("VERSION"')
    (project.folder / "train.py").write_text(slow)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    result = await client.sweep(exp, cwd=str(project.folder))
    await wait_until(
        lambda: _count(client, "toy-1", 2), what="some trials to finish before the kill"
    )
    assert not await _count(client, "toy-1", 12)  # the kill lands mid-sweep
    await client.close()
    project.kill_daemon(signal.SIGKILL)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    try:
        ended = [await client.wait(r.id, 90) for r in result.runs]
        assert [(r.status, r.attempt) for r in ended] == [(RunStatus.SUCCEEDED, 1)] * 12
        assert len(await client.runs(sweep="toy-1", limit=None)) == 12
        assert len(list((project.state_dir / "runs").glob("*/attempt-*"))) == 12  # none ran twice
        for run in ended:
            assert len(await client.metrics(run.id)) == 1  # one point each: no gap, no duplicate
        [sweep] = await client.sweeps()
        assert sweep.counts == {"succeeded": 12}
    finally:
        await client.close()


async def _count(client: Client, sweep: str, n: int) -> bool:
    runs = await client.runs(sweep=sweep, limit=None)
    return sum(r.status is RunStatus.SUCCEEDED for r in runs) >= n


STEPS = """\
import json, os, sys, time
params = json.loads(os.environ["RUNYARD_PARAMS"])
for step in range(40):
    print("@runyard", json.dumps({"step": step, "score": params["quality"] + step / 1000}), flush=True)
    time.sleep(0.05)
print("done")
"""
PRUNED = """\
name = "prune"
command = "{python} steps.py --quality {{quality}}"
metric = {{ name = "score", mode = "max" }}
[sweep]
method = "grid"
max_concurrent = 1
[sweep.params]
quality = [0.9, 0.8, 0.1]
[sweep.early_stop]
method = "median"
min_trials = 2
min_steps = 2
"""


def test_a_run_that_falls_behind_is_pruned_and_stopped(project: Project) -> None:
    (project.folder / "steps.py").write_text(STEPS)
    exp = project.folder / "prune.toml"
    exp.write_text(PRUNED.format(python=sys.executable))
    done = project.engine("sweep", str(exp), "--wait", timeout=90)
    assert done.returncode == 0, done.stderr  # a pruned trial is not a failure of the sweep
    assert "prune-1: 1 pruned, 2 succeeded" in done.stderr
    runs = json.loads(project.engine("runs", "--sweep", "prune-1", "--json").stdout)
    by_quality = {r["params"]["quality"]: r for r in runs}
    bad = by_quality[0.1]
    assert bad["status"] == "pruned"
    assert bad["reason"] == "pruned by median at step 2: score = 0.102"
    points = json.loads(project.engine("metrics", str(bad["id"]), "--json").stdout)
    assert 3 <= len(points) < 40  # stopped soon after step 2, long before its end
    assert "done" not in project.engine("logs", str(bad["id"])).stdout
    assert all(by_quality[q]["status"] == "succeeded" for q in (0.9, 0.8))
    best = project.engine("best", "prune-1")
    assert best.stdout.startswith("best of 2 configs by score (max, each run's last value): 0.939")


TPE = """\
name = "tpe"
command = "{python} tpe_train.py --x {{x}} --seed {{seed}}"
metric = {{ name = "score", mode = "max" }}
[sweep]
method = "tpe"
trials = 6
seeds = [0, 1]
max_concurrent = 2
[sweep.params]
x = {{ low = -3.0, high = 3.0 }}
"""
TPE_TRAIN = """\
import json, os, sys, time
params = json.loads(os.environ["RUNYARD_PARAMS"])
time.sleep(0.3)
print("@runyard", json.dumps({"step": 0, "score": -(params["x"] - 1) ** 2}), flush=True)
"""


async def test_a_tpe_sweep_samples_as_runs_end_and_goes_on_after_kill_9(
    project: Project,
) -> None:
    import signal

    from engine.client import connect

    (project.folder / "tpe_train.py").write_text(TPE_TRAIN)
    exp = project.folder / "tpe.toml"
    exp.write_text(TPE.format(python=sys.executable))
    await project.start_daemon()
    client = await connect(project.config, start=False)
    result = await client.sweep(exp, cwd=str(project.folder))
    assert result.trials == 12 and len(result.runs) == 2  # one config (2 seeds) at a time
    await wait_until(lambda: _count(client, "tpe-1", 4), what="two configs to finish")
    assert not await _count(client, "tpe-1", 12)  # the kill lands mid-sweep
    await client.close()
    project.kill_daemon(signal.SIGKILL)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    try:
        done = await asyncio.wait_for(client.wait_sweep("tpe-1"), 90)
        assert done.counts == {"succeeded": 12} and done.trials == 12
        runs = await client.runs(sweep="tpe-1", limit=None)
        names = sorted(r.name for r in runs)
        assert names == [f"tpe-1-{c:03d}-s{s}" for c in range(6) for s in (0, 1)]  # none twice
        assert len(list((project.state_dir / "runs").glob("*/attempt-*"))) == 12
        for config in range(6):
            seeds = [r for r in runs if r.trial == (0, config)]
            assert len(seeds) == 2 and seeds[0].params == seeds[1].params
        best = await client.best("tpe-1")
        assert best["configs"][0]["n"] == 2 and len(best["configs"]) == 6
    finally:
        await client.close()


LATE = """\
import json, os, pathlib, sys, time
params = json.loads(os.environ["RUNYARD_PARAMS"])
if params["quality"] < 0.5:  # the weak trial waits for the test to let it go
    while not pathlib.Path(sys.argv[1]).exists():
        time.sleep(0.02)
for step in range(6):
    print("@runyard", json.dumps({"step": step, "score": params["quality"]}), flush=True)
"""
LATE_SWEEP = PRUNED.replace("max_concurrent = 1", "max_concurrent = 3").replace(
    "steps.py --quality {{quality}}", "late.py {go} --quality {{quality}}"
)


async def test_a_run_that_finished_while_the_daemon_was_down_is_not_pruned_by_a_replay(
    client: Client, daemon: Project
) -> None:
    go = daemon.folder / "go"
    (daemon.folder / "late.py").write_text(LATE)
    exp = daemon.folder / "late.toml"
    exp.write_text(LATE_SWEEP.format(python=sys.executable, go=go))
    result = await client.sweep(exp, cwd=str(daemon.folder))
    await wait_until(lambda: _count(client, result.sweep, 2), timeout=30, what="two good runs")
    weak = next(r for r in result.runs if r.params["quality"] == 0.1)
    assert (await client.run(weak.id)).run.status is RunStatus.RUNNING
    daemon.kill_daemon()
    go.touch()  # it finishes every step while no daemon watches
    exit_file = daemon.state_dir / "runs" / str(weak.id) / "attempt-1" / "exit_code"
    await wait_until(exit_file.exists, what="the weak run to end on its own")
    await daemon.start_daemon()
    again = await connect_to(daemon)
    try:
        ended = await again.wait(weak.id, 30)
        assert (ended.status, ended.exit_code) == (RunStatus.SUCCEEDED, 0), ended.reason
        assert len(await again.metrics(weak.id)) == 6
    finally:
        await again.close()


async def connect_to(project: Project) -> Client:
    from engine.client import connect

    return await connect(project.config, start=False)


FAILING = """\
name = "bad"
command = "{python} fail.py {{i}}"
metric = {{ name = "score", mode = "max" }}
[sweep]
method = "random"
trials = 2
[sweep.params]
i = {{ low = 0, high = 1000000 }}
"""


def test_results_say_what_they_measured_and_names_are_unique_across_sweeps(
    project: Project,
) -> None:
    exp = make_project(project)
    for _ in range(2):
        done = project.engine("sweep", str(exp), "--wait", timeout=90)
        assert done.returncode == 0, done.stderr
    best = project.engine("best", "toy-2")
    assert best.stdout.startswith("best of 6 configs by score (max, each run's last value): ")
    names = [r["name"] for r in json.loads(project.engine("runs", "--json").stdout)]
    assert len(names) == len(set(names)) == 24 and "toy-2-000-s0" in names
    # a name two runs share is refused with both listed, never silently the newest
    again = project.engine("reproduce", "toy-1-000-s0")
    assert again.returncode == 0, again.stderr
    project.engine("run", "--name", "twin", "--", "true")
    project.engine("run", "--name", "twin", "--wait", "--", "true")
    shown = project.engine("show", "twin")
    assert shown.returncode == 1 and "2 runs are named 'twin': " in shown.stderr, shown.stderr
    # a sweep in which nothing succeeded: exit 1 with that reason
    bad = project.folder / "bad.toml"
    bad.write_text(FAILING.format(python=sys.executable))
    (project.folder / "fail.py").write_text(
        "print('@runyard {\"score\": 1}'); raise SystemExit(3)\n"
    )
    done = project.engine("sweep", str(bad), "--wait", timeout=60)
    assert done.returncode == 1, done.stderr
    nothing = project.engine("best", "bad-1")
    assert nothing.returncode == 1 and "no run succeeded (2 failed)" in nothing.stderr
    # each random sweep draws its own sampler seed, and records it
    project.engine("sweep", str(bad), timeout=60)
    sweeps = {s["id"]: s for s in json.loads(project.engine("sweeps", "--json").stdout)}
    assert sweeps["bad-1"]["sampler_seed"] != sweeps["bad-2"]["sampler_seed"]
    assert sweeps["toy-1"]["sampler_seed"] is None  # a grid draws nothing
