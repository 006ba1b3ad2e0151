"""The watchdog and notifications through the real daemon and CLI: a NaN flagged (and, with
on_nan = "stop", stopped as diverged), a silent run flagged and cleared, and the user's
notifier getting JSON events for failures, flags, sweeps and a real SSH host leaving and
coming back, while one that hangs is timed out without holding anything up."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil

from engine.client import Client, connect
from engine.model import FailureClass, RunStatus
from tui.app import RunyardApp
from tui.screens import RunDetailScreen
from tui.widgets import RunsTable

from .conftest import HOSTS, Project, wait_until
from .sshd import SshLab
from .test_control_center import on_screen
from .test_daemon import job

# Prints a loss per step; at `nan_at` the loss is NaN (as json.dumps writes it), then it goes
# on for as long as its `end` file is missing: a run that would burn its GPU for nothing.
DIVERGING = """\
import json, math, os, sys, time
nan_at, end = int(sys.argv[1]), sys.argv[2]
for step in range(1, 6):
    loss = float("nan") if step == nan_at else 1 / step
    print("@runyard", json.dumps({"step": step, "loss": loss, "acc": step / 10}), flush=True)
while not os.path.exists(end):
    time.sleep(0.02)
"""
# Prints, then stays silent until `go` exists; prints again, and ends once `end` exists.
SILENT = """\
import os, sys, time
go, end = sys.argv[1], sys.argv[2]
print("epoch 1", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
print("epoch 2", flush=True)
while not os.path.exists(end):
    time.sleep(0.02)
"""
EXPERIMENT = """\
name = "nan"
command = "{python} diverge.py {{nan_at}} {end}"
metric = {{ name = "acc", mode = "max" }}
[watch]
metrics = ["loss"]
on_nan = "stop"
[sweep.params]
nan_at = [3, 99]
"""


async def test_a_nan_is_flagged_and_with_on_nan_stop_the_run_is_stopped_as_diverged(
    daemon: Project,
) -> None:
    folder = daemon.folder
    (folder / "diverge.py").write_text(DIVERGING)
    end = folder / "end"
    exp = folder / "nan.toml"
    exp.write_text(EXPERIMENT.format(python=sys.executable, end=end))
    launched = daemon.engine("sweep", str(exp), "--json")
    assert launched.returncode == 0, launched.stderr
    client = await connect(daemon.config, start=False)
    try:
        runs = {r.params["nan_at"]: r for r in await client.runs(sweep="nan-1")}
        stopped = await client.wait(runs[3].id, 30)  # stopped though `end` does not exist
        assert (stopped.status, stopped.failure_class) == (RunStatus.FAILED, FailureClass.DIVERGED)
        assert stopped.reason == "diverged: loss is NaN at step 3"
        assert stopped.flag == "loss is NaN at step 3"
        shown = daemon.engine("show", str(stopped.id)).stdout
        assert "  flag       loss is NaN at step 3" in shown
        assert "flagged: loss is NaN at step 3" in shown  # an event says when
        # Flagged but not stopped: a run of `engine run` watching every metric.
        [flagged] = await client.submit(
            [job(daemon, [sys.executable, "diverge.py", "2", str(end)], name="flagged")]
        )
        await wait_until(lambda: _flag(client, flagged.id), what="the NaN flagged while it runs")
        running = (await client.run(flagged.id)).run
        assert running.status is RunStatus.RUNNING and running.flag == "loss is NaN at step 2"
        app = RunyardApp(str(daemon.config_path))
        async with app.run_test(size=(160, 48)) as pilot:  # the flag in the table and detail
            table = app.dash.query_one(RunsTable)
            await wait_until(lambda: table.window.cursor_run == flagged.id, what="listed")
            line = on_screen(table, "flagged")
            assert "running ⚑" in line and "⚑ loss is NaN at step 2" in line, line
            await pilot.press("enter")
            await wait_until(lambda: isinstance(app.screen, RunDetailScreen), what="the detail")
            facts = app.screen.query_one("#facts-text")
            await wait_until(lambda: "⚑ loss is NaN at step 2" in str(facts.render()))
        end.touch()
        ended = await client.wait(flagged.id, 30)
        assert ended.status is RunStatus.SUCCEEDED and ended.flag == "loss is NaN at step 2"
        healthy = await client.wait(runs[99].id, 30)
        assert healthy.status is RunStatus.SUCCEEDED and healthy.flag is None
        listed = daemon.engine("runs").stdout
        assert "loss is NaN at step 2" in listed
    finally:
        await client.close()


async def _flag(client: Client, run_id: int) -> str | None:
    return (await client.run(run_id)).run.flag


async def test_a_silent_run_is_flagged_and_cleared_when_it_prints_again(daemon: Project) -> None:
    folder = daemon.folder
    (folder / "silent.py").write_text(SILENT)
    go, end = folder / "go", folder / "end"
    started = daemon.engine(
        "run", "--stall-after", "0.5s", "--", sys.executable, "silent.py", str(go), str(end)
    )
    assert started.returncode == 0, started.stderr
    run_id = int(started.stdout)
    client = await connect(daemon.config, start=False)
    try:
        flag = await wait_until(lambda: _flag(client, run_id), what="the silence flagged")
        assert str(flag).startswith("silent for ")
        go.touch()
        await wait_until(lambda: _no_flag(client, run_id), what="the flag cleared once it printed")
        end.touch()
        ended = await client.wait(run_id, 30)
        assert ended.status is RunStatus.SUCCEEDED
        events = [e["reason"] for e in (await client.run(run_id)).details["events"]]
        assert any(str(e).startswith("flagged: silent for ") for e in events), events
        assert "flag cleared: it prints again" in events
    finally:
        await client.close()


async def _no_flag(client: Client, run_id: int) -> bool:
    return (await client.run(run_id)).run.flag is None


NOTIFIER = """\
import json, sys
event = json.loads(sys.stdin.read())
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(event) + "\\n")
"""
HANGING = """\
import os, sys, time
open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
time.sleep(3600)
"""


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# Like DIVERGING, but a SIGTERM only makes it say so (it saves a checkpoint first, as a real
# trainer might): it ends once `end` exists, with exit code 0.
STUBBORN = DIVERGING.replace(
    "import json, math, os, sys, time\n",
    "import json, math, os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('saving a checkpoint', flush=True))\n",
)


async def test_a_run_stopped_as_diverged_is_still_diverged_after_a_daemon_kill_9(
    short_tmp: Path,
) -> None:
    """The watchdog's stop is recorded before the run is signalled: a daemon killed while the
    run winds down classes it, once started again, as diverged, though it then exits 0."""
    hosts = HOSTS.format(max_jobs=2).replace("cancel_grace_s = 1.0", "cancel_grace_s = 600")
    project = Project(short_tmp, hosts)
    try:
        await project.start_daemon()
        (project.folder / "stubborn.py").write_text(STUBBORN)
        end = project.folder / "end"
        started = project.engine(
            "run", "--watch", "loss", "--on-nan", "stop", "--",
            sys.executable, "stubborn.py", "3", str(end),
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        run_id = int(started.stdout)
        # The TERM comes once the stop is recorded in the store.
        log = project.state_dir / "runs" / str(run_id) / "attempt-1" / "output.log"
        await wait_until(
            lambda: log.exists() and b"saving a checkpoint" in log.read_bytes(), what="the TERM"
        )
        project.kill_daemon()
        end.touch()  # it ends, exit code 0, with no daemon watching
        exit_code = log.with_name("exit_code")
        await wait_until(lambda: exit_code.exists() and exit_code.read_text(), what="its end")
        assert exit_code.read_text().strip() == "0"
        await project.start_daemon()
        client = await connect(project.config, start=False)
        try:
            ended = await client.wait(run_id, 30)
        finally:
            await client.close()
        assert (ended.status, ended.failure_class) == (RunStatus.FAILED, FailureClass.DIVERGED)
        assert ended.reason == "diverged: loss is NaN at step 3"
    finally:
        project.cleanup()


async def test_the_notifier_gets_json_events_for_failures_flags_sweeps_and_hosts(
    short_tmp: Path,
) -> None:
    lab = SshLab(short_tmp / "lab", 1)
    folder = short_tmp / "p"
    folder.mkdir()
    (folder / "notifier.py").write_text(NOTIFIER)
    (folder / "diverge.py").write_text(DIVERGING)
    got = folder / "events.jsonl"
    hosts = (
        "[engine]\n"
        'state_dir = "runs"\n'
        f"notify = {json.dumps([sys.executable, str(folder / 'notifier.py'), str(got)])}\n"
        '[hosts.local]\nkind = "local"\nmax_jobs = 4\n' + lab.toml(0, "box", lost_after_s=60)
    )
    project = Project(folder, hosts)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    try:
        tested = project.engine("notify", "test")
        assert tested.returncode == 0, tested.stderr
        assert tested.stdout.startswith("sent a test event to ")
        [sample] = _events(got)
        assert sample["event"] == "test" and sample["config"] == str(project.config_path)
        # A run that fails, and one whose loss becomes NaN.
        [failed] = await client.submit(
            [job(project, [sys.executable, "-c", "import sys; sys.exit(4)"], name="broken")]
        )
        [nan] = await client.submit(
            [job(project, [sys.executable, "diverge.py", "2", "/"], name="nan")]
        )
        # A sweep: told once it has finished, with its best result.
        exp = folder / "ok.toml"
        exp.write_text(
            f'name = "ok"\ncommand = "{sys.executable} -c \\"print(\'@runyard {{{{\\\\\\"auc\\\\\\": {{x}}}}}}\')\\""\n'
            'metric = { name = "auc", mode = "max" }\n[sweep.params]\nx = [0.5, 0.75, 0.25]\n'
        )
        assert project.engine("sweep", str(exp), "--wait").returncode == 0
        await wait_until(lambda: _kinds(got) >= {"run_failed", "run_flagged", "sweep_finished"})
        events = _events(got)
        [fail] = [e for e in events if e["event"] == "run_failed"]
        assert fail["run"]["id"] == failed.id and fail["run"]["exit_code"] == 4
        assert fail["run"]["reason"] == "exit code 4"
        [flag] = [e for e in events if e["event"] == "run_flagged"]
        assert flag["run"]["id"] == nan.id and flag["run"]["flag"] == "loss is NaN at step 2"
        [sweep] = [e for e in events if e["event"] == "sweep_finished"]
        assert sweep["sweep"]["id"] == "ok-1" and sweep["sweep"]["counts"] == {"succeeded": 3}
        best = sweep["sweep"]["best"]
        assert (best["metric"], best["mean"], best["params"]) == ("auc", 0.75, {"x": 0.75})
        # A real SSH host goes away and comes back.
        await wait_until(lambda: _host_up(client), timeout=30, what="the SSH host up")
        lab.hosts[0].kill()
        await wait_until(lambda: "host_unreachable" in _kinds(got), timeout=30, what="told")
        lab.hosts[0].start()
        await wait_until(lambda: "host_back" in _kinds(got), timeout=30, what="its return told")
        [away] = [e for e in _events(got) if e["event"] == "host_unreachable"]
        assert away["host"] == "box" and away["reason"]
    finally:
        await client.close()
        project.cleanup()
        lab.stop()


def _kinds(path: Path) -> set[str]:
    return {e["event"] for e in _events(path)}


async def _host_up(client: Client) -> bool:
    return any(h.name == "box" and h.state == "up" for h in (await client.hosts()).hosts)


async def test_a_hanging_notifier_is_timed_out_and_holds_nothing_up(short_tmp: Path) -> None:
    (short_tmp / "hang.py").write_text(HANGING)
    pids = short_tmp / "pids"
    hosts = (
        "[engine]\n"
        'state_dir = "runs"\n'
        f"notify = {json.dumps(f'{sys.executable} hang.py {pids}')}\n"
        "notify_timeout_s = 1\n"
        '[hosts.local]\nkind = "local"\nmax_jobs = 4\n'
    )
    project = Project(short_tmp, hosts)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    try:
        # Eight failures: eight notifiers, each hanging until it is timed out; runs go on.
        failing = [
            job(project, [sys.executable, "-c", "raise SystemExit(1)"], name=f"f{i}")
            for i in range(8)
        ]
        runs = await client.submit(failing)
        for run in runs:
            assert (await client.wait(run.id, 30)).status is RunStatus.FAILED
        [quick] = await client.submit([job(project, ["true"], name="quick")])
        assert (await client.wait(quick.id, 10)).status is RunStatus.SUCCEEDED
        outcome = await client.notify_test()
        assert outcome["timed_out"] and not outcome["sent"]
        assert 1.0 <= outcome["elapsed_s"] < 5
        assert "did not finish in 1s" in outcome["error"]
        await wait_until(lambda: len(_pids(pids)) == 9, what="every notifier started")
        await wait_until(
            lambda: not any(psutil.pid_exists(p) and _alive(p) for p in _pids(pids)),
            what="every notifier killed",
        )
        log = (short_tmp / "daemon-test.log").read_text()
        assert log.count("did not finish in 1s: killed") == 9
        cli = project.engine("notify", "test")
        assert cli.returncode == 1 and "did not finish in 1s" in cli.stderr
    finally:
        await client.close()
        project.cleanup()
        for pid in _pids(pids):
            if _alive(pid):
                os.kill(pid, 9)


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
