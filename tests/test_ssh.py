"""SSH hosts against real OpenSSH sshd processes on loopback: remote runs streamed and
reconciled through hangs, sshd restarts and daemon kills; bad hosts give clear states."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import re
import signal
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from engine.client import Client, connect
from engine.model import FailureClass, JobSpec, RetryPolicy, Run, RunStatus
from tui.app import RunyardApp
from tui.widgets import HostPane, since_text

from .conftest import Project, wait_until
from .sshd import SshLab

REMOTE_PY = "/usr/bin/python3"  # the hosts' own Python, not this test's virtualenv
STEPS = (
    "import json, os, sys, time\n"
    "n, pause = int(sys.argv[1]), float(sys.argv[2])\n"
    "pause *= float(os.environ.get('SLOWER', '1'))  # set by a host's `setup`\n"
    "folder = os.environ['RUNYARD_ARTIFACT_DIR']\n"
    "os.makedirs(folder, exist_ok=True)\n"
    "open(os.path.join(folder, 'result.json'), 'w').write(json.dumps({'n': n}))\n"
    "print('ARGV', json.dumps(sys.argv[3:]), flush=True)\n"
    "for step in range(n):\n"
    "    print('@runyard', json.dumps({'step': step, 'loss': 1 / (step + 1)}), flush=True)\n"
    "    time.sleep(pause)\n"
)


def steps_job(project: Project, host: str, n: int, pause: float, *extra: str) -> JobSpec:
    return JobSpec(
        argv=(REMOTE_PY, "-c", STEPS, str(n), str(pause), *extra),
        cwd="/",
        host=host,
        name=f"steps-{host}",
    )


async def open_project(
    folder: Path, hosts: str, env: dict[str, str] | None = None
) -> tuple[Project, Client]:
    """A project with these hosts in `folder`, its daemon started, and a client of it."""
    folder.mkdir(exist_ok=True)
    project = Project(folder, hosts)
    project.extra_env = env or {}
    await project.start_daemon()
    return project, await connect(project.config, start=False)


@pytest.fixture
def lab(short_tmp: Path) -> Iterator[SshLab]:
    lab = SshLab(short_tmp / "lab", 2)
    yield lab
    lab.stop()


@pytest.fixture
async def remote(short_tmp: Path, lab: SshLab) -> AsyncIterator[tuple[Project, Client]]:
    hosts = (
        '[engine]\nstate_dir = "runs"\nsample_interval_s = 0.5\ncancel_grace_s = 1\n'
        '[hosts.local]\nkind = "local"\nmax_jobs = 2\n'
        + lab.toml(0, "box1", lost_after_s=60)
        + lab.toml(1, "box2", lost_after_s=60)
    )
    project, client = await open_project(short_tmp / "p", hosts)
    await wait_until(lambda: _all_up(client), timeout=30, what="both SSH hosts up")
    try:
        yield project, client
    finally:
        await client.close()
        project.cleanup()


async def _all_up(client: Client) -> bool:
    return all(h.state == "up" for h in (await client.hosts()).hosts)


async def _host(client: Client, name: str):  # type: ignore[no-untyped-def]
    return next(h for h in (await client.hosts()).hosts if h.name == name)


async def test_a_remote_run_streams_its_metrics_and_takes_hostile_values_verbatim(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    hostile = ("'; touch PWNED", "$(touch PWNED2)", "`touch PWNED3`", "a b\nc")
    [run] = await client.submit([steps_job(project, "box1", 30, 0.01, *hostile)])
    ended = await client.wait(run.id, 60)
    assert (ended.status, ended.host, ended.exit_code) == (RunStatus.SUCCEEDED, "box1", 0)
    assert ended.run_dir.startswith(str(lab.hosts[0].workdir))
    run_dir = Path(ended.run_dir)  # the host is this machine: its files can be looked at
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (run_dir, run_dir / "attempt-1")}
    assert set(modes.values()) == {0o700}, modes  # the run's folders are the user's alone
    assert stat.S_IMODE((run_dir / "attempt-1" / "output.log").stat().st_mode) == 0o600
    points = await client.metrics(run.id)
    assert [p["step"] for p in points] == list(range(30))  # every step once, in order
    log = (await client.log(run.id))[0].decode()
    assert json.loads(log.splitlines()[0].removeprefix("ARGV ")) == list(hostile)
    assert not [p for p in lab.folder.parent.rglob("PWNED*")]  # nothing reached a shell
    fetched = project.state_dir / "runs" / str(run.id) / "artifacts" / "result.json"
    assert json.loads(fetched.read_text()) == {"n": 30}  # artifacts copied back at the end
    # the host's own telemetry probe feeds its pane
    await wait_until(
        lambda: _host_sampled(client, "box1"), timeout=20, what="a sample from box1's probe"
    )


async def _host_sampled(client: Client, name: str) -> bool:
    host = await _host(client, name)
    return host.sample is not None and len(host.sample.cpu_per_core) == psutil.cpu_count()


async def test_cancel_kills_the_remote_process_group(
    remote: tuple[Project, Client],
) -> None:
    project, client = remote
    [run] = await client.submit([steps_job(project, "box2", 1000, 0.05)])
    await wait_until(lambda: _has_points(client, run.id, 3), what="the run to print")
    pid = (await client.run(run.id)).run.pid
    assert pid and psutil.pid_exists(pid)  # the hosts share this machine: we can look
    await client.cancel(run.id)
    ended = await client.wait(run.id, 30)
    assert ended.status is RunStatus.CANCELLED
    await wait_until(lambda: not psutil.pid_exists(pid), what="the remote process to end")


async def _has_points(client: Client, run_id: int, n: int) -> bool:
    return len(await client.metrics(run_id)) >= n


async def _status(client: Client, run_id: int) -> RunStatus:
    return (await client.run(run_id)).run.status


async def _events(client: Client, run_id: int) -> list[str]:
    return [f"{e['to']}: {e['reason']}" for e in (await client.run(run_id)).details["events"]]


async def test_a_hung_link_is_noticed_in_seconds_and_the_run_goes_on(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    [run] = await client.submit([steps_job(project, "box1", 80, 0.1)])
    await wait_until(lambda: _has_points(client, run.id, 5), what="the run to print")
    loop = asyncio.get_running_loop()
    hung_at = loop.time()
    frozen = lab.hosts[0].hang()
    assert frozen  # the daemon's connection (and only it) is frozen mid-run
    try:
        await wait_until(
            lambda: _was(client, run.id, "unreachable"), timeout=20, what="the hang noticed"
        )
        noticed = loop.time() - hung_at
        print(f"hung link noticed after {noticed:.1f}s (keepalive 0.5s)")
        assert noticed < 10
    finally:
        for process in frozen:
            with contextlib.suppress(psutil.Error):
                process.resume()
    ended = await client.wait(run.id, 60)
    assert ended.status is RunStatus.SUCCEEDED and ended.attempt == 1
    assert [p["step"] for p in await client.metrics(run.id)] == list(range(80))
    events = await _events(client, run.id)
    assert any(e.startswith("unreachable: host box1 unreachable") for e in events), events
    assert any(e.startswith("running: host box1 is back") for e in events), events


async def _start_dropped(client: Client, lab: SshLab, job: JobSpec) -> Run:
    """Submit `job` to box1 while its link hangs, and kill the host while the start waits on
    it: the start request never reaches a shell. The host then comes back."""
    frozen = lab.hosts[0].hang()
    assert frozen
    [run] = await client.submit([job])
    await wait_until(lambda: _status_is(client, run.id, RunStatus.STARTING), what="starting")
    return run


async def test_a_run_cancelled_while_starting_is_cancelled_even_if_its_host_drops(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    run = await _start_dropped(client, lab, steps_job(project, "box1", 5, 0.01))
    cancelled = await client.cancel(run.id)
    assert cancelled.status is RunStatus.STARTING  # it ends once its start returns
    lab.hosts[0].kill()
    lab.hosts[0].start()
    ended = await client.wait(run.id, 60)
    assert ended.status is RunStatus.CANCELLED, ended.reason
    assert (
        ended.reason
        == "cancelled by user while starting; host box1 dropped before attempt 1 started"
    )
    assert ended.attempt == 1  # never queued again, never run


async def test_a_start_the_host_dropped_counts_against_the_attempts(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    job = msgspec.structs.replace(
        steps_job(project, "box1", 5, 0.01), retry=RetryPolicy(attempts=1, backoff_s=0)
    )
    run = await _start_dropped(client, lab, job)
    lab.hosts[0].kill()
    lab.hosts[0].start()
    ended = await client.wait(run.id, 60)
    assert (ended.status, ended.attempt, ended.failure_class) == (
        RunStatus.FAILED,
        1,
        FailureClass.HOST_LOST,
    )
    assert ended.reason == "host box1 dropped before attempt 1 started; gave up after 1 attempts"
    later = await client.submit([steps_job(project, "box1", 5, 0.01)])  # the host works on
    assert (await client.wait(later[0].id, 60)).status is RunStatus.SUCCEEDED


async def _was(client: Client, run_id: int, status: str) -> bool:
    return any(e.startswith(f"{status}:") for e in await _events(client, run_id))


async def _printing_then_unreachable(client: Client, project: Project, lab: SshLab, n: int) -> Run:
    """A run of `n` steps on box2, printing, whose host is then killed under it."""
    [run] = await client.submit([steps_job(project, "box2", n, 0.1)])
    await wait_until(lambda: _has_points(client, run.id, 5), what="the run to print")
    lab.hosts[1].kill()
    await wait_until(
        lambda: _status_is(client, run.id, RunStatus.UNREACHABLE), what="the run unreachable"
    )
    return run


async def test_a_host_killed_and_restarted_mid_run_loses_nothing(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    run = await _printing_then_unreachable(client, project, lab, 60)
    host = await _host(client, "box2")
    assert host.state == "unreachable" and host.reason and host.since
    local = await client.submit([JobSpec(argv=("true",), cwd="/", host="local")])
    assert (await client.wait(local[0].id, 30)).status is RunStatus.SUCCEEDED  # rest works
    lab.hosts[1].start()
    ended = await client.wait(run.id, 60)
    assert ended.status is RunStatus.SUCCEEDED and ended.attempt == 1
    assert [p["step"] for p in await client.metrics(run.id)] == list(range(60))


async def test_the_control_center_shows_a_host_going_unreachable_and_coming_back(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    """The TUI against real sshd hosts: one is killed, its pane says unreachable since when and
    why, the user is told; it starts again, and the pane and a notification say it is back."""
    project, _ = remote
    app = RunyardApp(str(project.config_path))
    async with app.run_test(size=(160, 48)):

        def pane(name: str) -> HostPane | None:
            return next((p for p in app.dash.query(HostPane) if p.host == name), None)

        def told(text: str) -> bool:
            return any(text in n.message for n in app._notifications)

        await wait_until(lambda: (p := pane("box2")) and p.state == "up", what="box2 shown up")
        assert pane("box1") and pane("local")
        lab.hosts[1].kill()  # at once: the app subscribed before it showed the hosts
        await wait_until(lambda: told("host box2 unreachable"), timeout=30, what="the user told")
        box2 = pane("box2")
        assert box2 is not None and box2.state == "unreachable" and box2.reason and box2.since
        title = box2.title_text().plain
        assert f"unreachable since {since_text(box2.since)}  {box2.reason}" in title, title
        lab.hosts[1].start()
        await wait_until(lambda: told("host box2 is back"), timeout=30, what="its return told")
        assert box2.state == "up" and "since" not in box2.title_text().plain


async def _status_is(client: Client, run_id: int, status: RunStatus) -> bool:
    return await _status(client, run_id) is status


async def test_remote_runs_survive_kill_9_of_the_daemon(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    runs = await client.submit(
        [steps_job(project, host, 50, 0.08) for host in ("box1", "box2", "local")]
    )
    for run in runs:
        await wait_until(lambda run=run: _has_points(client, run.id, 5), what="runs printing")
    await client.close()
    project.kill_daemon(signal.SIGKILL)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    try:
        for run in runs:
            ended = await client.wait(run.id, 60)
            assert (ended.status, ended.attempt) == (RunStatus.SUCCEEDED, 1), ended
            assert [p["step"] for p in await client.metrics(run.id)] == list(range(50))
    finally:
        await client.close()


SWEEP = """\
name = "spread"
command = "/usr/bin/python3 train.py --i {i}"
metric = { name = "score", mode = "max" }
[sweep]
method = "grid"
[sweep.params]
i = [0, 1, 2, 3, 4, 5]
"""
TRAIN = """\
import json, sys, time
i = int(sys.argv[2])
time.sleep(1)
print("@runyard", json.dumps({"step": 0, "score": i}))
"""


async def test_a_sweep_spreads_over_remote_hosts_from_one_uploaded_snapshot(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    (project.folder / "train.py").write_text(TRAIN)
    exp = project.folder / "spread.toml"
    exp.write_text(SWEEP)
    result = await client.sweep(exp, cwd=str(project.folder))
    ended = [await client.wait(r.id, 60) for r in result.runs]
    assert {r.status for r in ended} == {RunStatus.SUCCEEDED}
    assert {r.host for r in ended} == {"local", "box1", "box2"}
    for host in lab.hosts:
        snapshots = list((host.workdir / "snapshots").iterdir())
        assert len(snapshots) == 1 and (snapshots[0] / "train.py").read_text() == TRAIN
    best = await client.best(result.sweep)
    assert best["configs"][0]["params"] == {"i": 5}


async def test_bad_hosts_get_clear_states_and_nothing_else_stops(
    short_tmp: Path, lab: SshLab
) -> None:
    from .sshd import free_port, keygen

    good = lab.hosts[0]
    stranger = keygen(short_tmp / "stranger")
    empty_known = short_tmp / "empty_known_hosts"
    empty_known.write_text("")
    changed_known = short_tmp / "changed_known_hosts"  # another key recorded for that host
    stranger_key = (short_tmp / "stranger.pub").read_text().split()[:2]
    changed_known.write_text(f"[{good.address}]:{good.port} {' '.join(stranger_key)}\n")
    nothing = free_port("127.0.0.9")
    hosts = (
        '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\n'
        + good.toml("badkey", stranger, lab.known_hosts)
        + good.toml("newkey", lab.client_key, empty_known)
        + good.toml("nobody", lab.client_key, lab.known_hosts)
        .replace(f"port = {good.port}", f'port = {nothing}\naddress = "127.0.0.9"', 1)
        .replace(f'address = "{good.address}"\n', "", 1)
        + good.toml("noworkdir", lab.client_key, lab.known_hosts, workdir="/proc/runyard")
        + good.toml("nopython", lab.client_key, lab.known_hosts, python="/no/such/python3")
        + good.toml("changedkey", lab.client_key, changed_known)
        + good.toml("noidentity", lab.client_key, lab.known_hosts).replace(
            f'identity = "{lab.client_key}"', 'identity = "/no/such/key"'
        )
    )
    project, client = await open_project(short_tmp / "p", hosts)
    try:
        expected = {
            "badkey": ("unreachable", "authentication to 127.0.0.2"),
            "newkey": ("unreachable", "host key of 127.0.0.2"),
            "nobody": ("unreachable", "127.0.0.9:"),
            "noworkdir": ("up", None),
            "nopython": ("up", "no Python (/no/such/python3) on the host: no telemetry"),
            "changedkey": (
                "unreachable",
                f"WARNING: host key of 127.0.0.2:{good.port} has CHANGED",
            ),
            "noidentity": ("unreachable", "127.0.0.2:"),
        }

        seen: dict[str, tuple[str, str | None]] = {}

        async def settled() -> bool:
            seen.update({h.name: (h.state, h.reason) for h in (await client.hosts()).hosts})
            return all(
                seen[n][0] == state and (why is None or (seen[n][1] or "").startswith(why))
                for n, (state, why) in expected.items()
            )

        try:
            await wait_until(settled, timeout=30, what="every bad host in its state")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {seen}") from None
        found = {h.name: h for h in (await client.hosts()).hosts}
        assert "accept it with `ssh -p" in (found["newkey"].reason or "")
        assert "connection refused" in (found["nobody"].reason or "")
        changed = found["changedkey"].reason or ""
        assert "Do not accept it blindly" in changed and "accept it with" not in changed
        assert "identity file /no/such/key does not exist" in (found["noidentity"].reason or "")
        # a run sent to a host whose workdir cannot be made fails with that reason
        [bad] = await client.submit([JobSpec(argv=("true",), cwd="/", host="noworkdir")])
        failed = await client.wait(bad.id, 30)
        assert failed.status is RunStatus.FAILED
        assert "cannot create workdir /proc/runyard on noworkdir" in (failed.reason or "")
        # a host without Python still runs jobs (only its telemetry is off)
        [ok] = await client.submit(
            [JobSpec(argv=("sh", "-c", "echo fine"), cwd="/", host="nopython")]
        )
        assert (await client.wait(ok.id, 30)).status is RunStatus.SUCCEEDED
        [local] = await client.submit([JobSpec(argv=("true",), cwd="/", host="local")])
        assert (await client.wait(local.id, 30)).status is RunStatus.SUCCEEDED
        shown = project.engine("hosts")
        assert shown.returncode == 0 and "unreachable for" in shown.stdout
        check = project.engine("host", "check", "badkey")
        assert check.returncode == 1
        lines = check.stdout.splitlines()
        assert lines[0].startswith("ok    resolve") and lines[1].startswith("ok    tcp")
        assert lines[2].startswith("FAIL  ssh      authentication to 127.0.0.2")
        check = project.engine("host", "check", "nopython")
        assert check.returncode == 1 and "FAIL  python" in check.stdout
        assert "ok    setsid" in check.stdout and "ok    gpu      no NVIDIA GPU" in check.stdout
    finally:
        await client.close()
        project.cleanup()


LOST_AFTER_S = 2


def _fallback_hosts(lab: SshLab) -> str:
    """box1 preferred for `train` jobs, ten times slower there, given up on after 2 s away;
    this machine as the fallback."""
    return (
        '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\ntags = ["train"]\n'
        + lab.toml(
            0,
            "box1",
            lost_after_s=LOST_AFTER_S,
            tags=["train"],
            setup="source /dev/null && export SLOWER=10",
        )
        + '[[routes]]\nmatch = { tags = ["train"] }\nprefer = ["box1"]\nfallback = ["local"]\n'
    )


async def _start_on_box1(client: Client, project: Project) -> Run:
    """A 40-step training job, started and printing on box1 (where it takes 40 s)."""
    await wait_until(lambda: _all_up(client), timeout=30, what="box1 up")
    job = msgspec.structs.replace(
        steps_job(project, "box1", 40, 0.1),
        host=None,
        tags=("train",),
        retry=RetryPolicy(attempts=2, backoff_s=0.1),
    )
    [run] = await client.submit([job])
    await wait_until(lambda: _has_points(client, run.id, 3), what="the run to print on box1")
    first = (await client.run(run.id)).run
    assert first.host == "box1" and first.pid
    return first


async def _check_kept_once(client: Client, run_id: int, old_pid: int) -> None:
    """The run succeeded once, on its retry: its record is that attempt's alone, the reason it
    gave up on box1 names the real time away, and the old copy on box1 was killed."""
    detail = await client.run(run_id)
    run, details = detail.run, detail.details
    assert (run.status, run.attempt, run.host) == (RunStatus.SUCCEEDED, 2, "local")
    assert (run.failure_class, run.exit_code) == (None, 0)  # not host_lost: it succeeded
    [loss] = [m for m in details["metrics"] if m["key"] == "loss"]
    assert loss["count"] == 40, loss  # the final attempt's 40 steps, not box1's few mixed in
    assert [p["step"] for p in await client.metrics(run_id)] == list(range(40))
    early = await client.metrics(run_id, attempt=1)
    assert early and {p["attempt"] for p in early} == {1}  # box1's points are kept apart
    box1_log = (await client.log(run_id, attempt=1))[0].decode()
    assert box1_log.startswith("ARGV") and '"step": 0' in box1_log  # read from box1, not here
    [why] = [e for e in await _events(client, run_id) if "unreachable for over" in e]
    away = int(re.search(r"unreachable for over (\d+)s", why)[1])  # type: ignore[index]
    assert LOST_AFTER_S <= away <= LOST_AFTER_S + 1, why  # the real figure, not twice it
    first = details["attempts"][0]
    assert first["failure_class"] == "host_lost", first
    assert "its copy on box1 was killed when the host came back" in first["reason"], first
    await wait_until(lambda: not psutil.pid_exists(old_pid), what="the killed copy to exit")


async def test_a_host_away_too_long_has_its_runs_retried_elsewhere_and_kept_once(
    short_tmp: Path, lab: SshLab
) -> None:
    box = lab.hosts[0]
    project, client = await open_project(short_tmp / "p", _fallback_hosts(lab))
    try:
        first = await _start_on_box1(client, project)
        box.kill()
        ended = await client.wait(first.id, 60)
        assert (ended.status, ended.attempt, ended.host) == (RunStatus.SUCCEEDED, 2, "local")
        assert psutil.pid_exists(first.pid)  # the old copy still runs on the unreachable host
        box.start()
        await wait_until(lambda: _copy_stopped(client, first.id), what="the old copy killed")
        await _check_kept_once(client, first.id, first.pid)
    finally:
        await client.close()
        project.cleanup()


async def test_an_abandoned_copy_is_killed_on_return_even_after_a_daemon_kill_9(
    short_tmp: Path, lab: SshLab
) -> None:
    """The daemon gives up on box1, retries the run here, and is killed -9 before box1 comes
    back: the daemon started after it still kills box1's copy on its return."""
    box = lab.hosts[0]
    project, client = await open_project(short_tmp / "p", _fallback_hosts(lab))
    try:
        first = await _start_on_box1(client, project)
        box.kill()
        await wait_until(
            lambda: _status_is_on(client, first.id, "local"), what="the retry started here"
        )
        await client.close()
        project.kill_daemon(signal.SIGKILL)
        await project.start_daemon()
        client = await connect(project.config, start=False)
        ended = await client.wait(first.id, 60)
        assert (ended.status, ended.attempt) == (RunStatus.SUCCEEDED, 2)
        assert psutil.pid_exists(first.pid)  # both copies ran: box1's is still going
        box.start()
        await wait_until(lambda: _copy_stopped(client, first.id), what="the old copy killed")
        await _check_kept_once(client, first.id, first.pid)
    finally:
        await client.close()
        project.cleanup()


async def _status_is_on(client: Client, run_id: int, host: str) -> bool:
    run = (await client.run(run_id)).run
    return run.host == host and run.status in (RunStatus.RUNNING, RunStatus.SUCCEEDED)


async def _copy_stopped(client: Client, run_id: int) -> bool:
    first = (await client.run(run_id)).details["attempts"][0]
    return "when the host came back" in (first["reason"] or "")


async def test_a_run_that_ends_during_an_outage_keeps_its_end_time_and_the_host_no_stale_reason(
    remote: tuple[Project, Client], lab: SshLab
) -> None:
    project, client = remote
    run = await _printing_then_unreachable(client, project, lab, 30)
    run_dir = Path((await client.run(run.id)).run.run_dir or "")
    exit_code = run_dir / "attempt-1" / "exit_code"  # the host is this machine
    await wait_until(exit_code.exists, what="the run to end while its host is away")
    written = exit_code.stat().st_mtime
    restarted = time.time()
    lab.hosts[1].start()
    ended = await client.wait(run.id, 60)
    assert ended.status is RunStatus.SUCCEEDED and ended.ended_at is not None
    assert ended.ended_at < restarted  # it ended before the host came back, not when seen
    assert abs(ended.ended_at - written) < 0.01, (ended.ended_at, written)
    [attempt] = (await client.run(run.id)).details["attempts"]
    assert attempt["ended_at"] == ended.ended_at
    await wait_until(lambda: _all_up(client), what="box2 up again")
    host = await _host(client, "box2")
    assert host.reason is None, host.reason  # nothing left from the probe the outage broke


async def test_hosts_named_by_ssh_config_alias_through_a_proxy_jump(
    short_tmp: Path, lab: SshLab
) -> None:
    jump, inner = lab.hosts
    home = short_tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(lab.known_hosts.read_text())
    user = getpass.getuser()
    (home / ".ssh" / "config").write_text(
        f"Host jumpbox\n  HostName {jump.address}\n  Port {jump.port}\n  User {user}\n"
        f"  IdentityFile {lab.client_key}\n"
        f"Host inner\n  HostName {inner.address}\n  Port {inner.port}\n  User {user}\n"
        f"  IdentityFile {lab.client_key}\n  ProxyJump jumpbox\n"
    )
    hosts = (
        '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\n'
        f'[hosts.gpu-box]\nkind = "ssh"\naddress = "inner"\nworkdir = "{inner.workdir}"\n'
    )
    project, client = await open_project(
        short_tmp / "p", hosts, {"HOME": str(home), "SSH_AUTH_SOCK": ""}
    )
    try:
        await wait_until(lambda: _all_up(client), timeout=30, what="gpu-box up via jumpbox")
        [run] = await client.submit([steps_job(project, "gpu-box", 5, 0.01)])
        ended = await client.wait(run.id, 30)
        assert ended.status is RunStatus.SUCCEEDED and len(await client.metrics(run.id)) == 5
        assert ended.run_dir.startswith(str(inner.workdir))
        # the connection went through the first host: it logged the jump login
        log = (jump.folder / "sshd.log").read_text()
        assert "Accepted publickey" in log  # the daemon never connects to jumpbox by name
    finally:
        await client.close()
        project.cleanup()


async def test_a_sweep_with_ignored_data_runs_on_ssh_hosts_each_trial_in_its_own_directory(
    short_tmp: Path, lab: SshLab
) -> None:
    from .test_workspace import research_project

    # box1 has the weights already (mapped); box2 gets the data uploaded once per content
    mapped = short_tmp / "scratch" / "weights"
    mapped.mkdir(parents=True)
    (mapped / "base.pt").write_bytes(b"\x02" * 512)
    hosts = (
        '[engine]\nstate_dir = "runs"\nsample_interval_s = 0.5\n'
        '[hosts.local]\nkind = "local"\nmax_jobs = 1\n'
        + lab.toml(0, "box1", tags=["gpu"], data={"weights/": str(mapped)})
        + lab.toml(1, "box2", tags=["gpu"])
    )
    (short_tmp / "p").mkdir()
    exp = research_project(short_tmp / "p", REMOTE_PY, top='requires = ["gpu"]')
    exp.write_text(exp.read_text().replace("i = [0, 1, 2]", "i = [0, 1, 2, 3, 4, 5]"))
    project, client = await open_project(short_tmp / "p", hosts)
    try:
        await wait_until(lambda: _all_up(client), timeout=30, what="both SSH hosts up")
        result = await client.sweep(exp, cwd=str(project.folder))
        ended = [await client.wait(r.id, 60) for r in result.runs]
        logs = [(await client.log(r.id))[0].decode() for r in ended]
        assert {r.status for r in ended} == {RunStatus.SUCCEEDED}, logs
        assert {r.host for r in ended} == {"box1", "box2"}
        for run in ended:
            model = Path(run.run_dir) / "attempt-1" / "work" / "out" / "model.bin"
            base = 512 if run.host == "box1" else 4096  # the host's own copy where mapped
            assert model.read_text() == f"run {run.id} i {run.params['i']} corpus 1200 base {base}"
        box2 = lab.hosts[1].workdir
        uploads = sorted(p.name for p in (box2 / "data").iterdir())
        assert len(uploads) == 2  # corpus and weights, once each for three trials
        assert (
            not (lab.hosts[0].workdir / "data").exists()
            or len(list((lab.hosts[0].workdir / "data").iterdir())) == 1
        )  # box1 uploaded the corpus only
        [snapshot] = (box2 / "snapshots").iterdir()
        assert not (snapshot / "train.py").stat().st_mode & 0o222  # read-only there too
        assert not (snapshot / "out").exists()
    finally:
        await client.close()
        project.cleanup()
