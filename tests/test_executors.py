"""The executor contract: one suite, run over every kind of executor (this machine, and a real
sshd host on loopback), as the engine uses them. A new executor (a cluster scheduler) is added
by making it pass this suite."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.config import load_config
from engine.executors import Attempt, Executor, HostUnreachable, Launch, ProcessState, executor_for

from .conftest import wait_until
from .slurm import SlurmCluster
from .sshd import SshLab

REMOTE_PY = "/usr/bin/python3"  # on the SSH host, its own Python
COUNT = (
    "import os, sys, time\n"
    "folder = os.environ['RUNYARD_ARTIFACT_DIR']\n"
    "os.makedirs(folder, exist_ok=True)\n"
    "open(os.path.join(folder, 'made.txt'), 'w').write('by the run')\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print('line', i, flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
    "sys.exit(int(sys.argv[3]))\n"
)


@pytest.fixture
def cluster(short_tmp: Path) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(short_tmp / "slurm")
    yield cluster
    cluster.stop()


@pytest.fixture
def lab(short_tmp: Path) -> Iterator[SshLab]:
    lab = SshLab(short_tmp / "lab", 1)
    yield lab
    lab.stop()


@pytest.fixture(params=["local", "ssh", "slurm"])
async def host(
    request: pytest.FixtureRequest, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Executor, SshLab | None]]:
    """An executor of each kind, connected, with the lab behind it (None for this machine,
    and for a Slurm cluster reached directly)."""
    lab = request.getfixturevalue("lab") if request.param == "ssh" else None
    hosts = '[engine]\nstate_dir = "state"\n[hosts.local]\nkind = "local"\n'
    name = {"local": "local", "ssh": "box", "slurm": "rig"}[request.param]
    if lab is not None:
        hosts += lab.toml(0, "box")
    if request.param == "slurm":
        cluster = request.getfixturevalue("cluster")
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        hosts += f'[hosts.rig]\nkind = "slurm"\nworkdir = "{short_tmp}/rig"\npoll_s = 0.2\n'
    (short_tmp / "hosts.toml").write_text(hosts)
    config = load_config(short_tmp / "hosts.toml")
    config.state_dir.mkdir(parents=True)
    executor = executor_for(config, name, lambda: None, lambda _: None)
    executor.connect()
    await asyncio.wait_for(executor.until_up(), 30)
    try:
        yield executor, lab
    finally:
        await executor.close()


def _launch(executor: Executor, run_id: int, n: int, pause: float, code: int = 0) -> Launch:
    python = REMOTE_PY if executor.host.kind == "ssh" else sys.executable
    run_dir = executor.run_dir(run_id)
    return Launch(
        run_id=run_id,
        attempt=1,
        argv=(python, "-c", COUNT, str(n), str(pause), str(code)),
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "RUNYARD_ARTIFACT_DIR": f"{run_dir}/artifacts"},
        attempt_dir=executor.attempt_dir(run_id, 1),
    )


async def _started(executor: Executor, launch: Launch) -> Attempt:
    """Start an attempt and return it once it runs (at once but on a cluster, whose job may
    wait in its queue first)."""
    attempt = await executor.start(launch)
    running = await asyncio.wait_for(executor.until_started(attempt), 60)
    assert running is not None
    return running


async def _output(executor: Executor, attempt: Attempt) -> bytes:
    return await executor.read_output(attempt, 0, 1 << 20)


async def test_a_run_starts_prints_and_ends_with_its_exit_code(
    host: tuple[Executor, SshLab | None],
) -> None:
    executor, _ = host
    attempt = await _started(executor, _launch(executor, 1, 3, 0.01, code=3))
    assert attempt.pid > 0 and attempt.attempt_dir == executor.attempt_dir(1, 1)
    ended = await asyncio.wait_for(executor.wait(attempt), 30)
    assert ended.exit_code == 3 and ended.ended_at is not None
    assert await executor.probe(attempt) is ProcessState.EXITED
    out = await _output(executor, attempt)
    assert out == b"line 0\nline 1\nline 2\n"
    assert await executor.output_size(attempt) == len(out)
    assert await executor.read_output(attempt, 7, 7) == b"line 1\n"  # from an offset, bounded


async def test_many_attempts_outputs_are_sized_and_read_in_one_go(
    host: tuple[Executor, SshLab | None],
) -> None:
    """What the output reader asks of a host each round: every followed attempt's size, then
    the new bytes of those that grew, each from its own offset."""
    executor, _ = host
    attempts = [await executor.start(_launch(executor, 10 + i, i + 1, 0)) for i in range(3)]
    for attempt in attempts:
        await asyncio.wait_for(executor.wait(attempt), 30)
    missing = executor.attempt(99, 1)  # never started: no output yet, not an error
    sizes = await executor.output_sizes([*attempts, missing])
    assert sizes == [7, 14, 21, 0]
    reads = await executor.read_outputs(
        [(attempts[1], 7, 100), (attempts[2], 0, 7), (missing, 0, 9)]
    )
    assert reads == [b"line 1\n", b"line 0\n", b""]


async def test_which_attempts_have_folders_is_asked_for_many_at_once(
    host: tuple[Executor, SshLab | None],
) -> None:
    """What a restarted daemon asks of a host for every queued run: whether the last daemon
    started its next attempt there."""
    executor, _ = host
    assert await executor.existing_attempts([(30, 1)]) == set()  # no run folder at all yet
    started = await executor.start(_launch(executor, 30, 1, 0))
    await asyncio.wait_for(executor.wait(started), 30)
    wanted = [(30, 1), (30, 2), (31, 1), *((1000 + i, 1) for i in range(500))]
    assert await executor.existing_attempts(wanted) == {(30, 1)}


async def test_a_watch_names_the_folders_whose_output_changed_once_per_arming(
    tmp_path: Path,
) -> None:
    """On this machine the reader is woken by inotify: a quiet attempt costs nothing, and a
    chatty one wakes it once until it is read (the watch is armed again before reading). Any
    file of the folder spends its watch, so any names it: a `pid` the wrapper writes after the
    folder is watched must not leave its output unwatched."""
    from engine.executors.watch import OutputWatch

    woken = asyncio.Event()
    watch = OutputWatch(woken.set)
    quiet, chatty = tmp_path / "quiet", tmp_path / "chatty"
    for folder in (quiet, chatty):
        folder.mkdir()
        assert watch.add(str(folder))
    try:
        with open(chatty / "output.log", "ab", buffering=0) as out:
            for _ in range(50):
                out.write(b"a line\n")
            await asyncio.wait_for(woken.wait(), 10)
            woken.clear()
            assert watch.take() == {str(chatty)}
            out.write(b"unseen until armed again\n")
            assert watch.take() == set()  # inotify queues an event within the write itself
            assert watch.add(str(chatty))
            (chatty / "pid").write_text("4242")
            await asyncio.wait_for(woken.wait(), 10)
            woken.clear()
            assert watch.take() == {str(chatty)}  # spent on `pid`: to be read and armed again
            assert watch.add(str(chatty))
            out.write(b"seen\n")
            await asyncio.wait_for(woken.wait(), 10)
            assert watch.take() == {str(chatty)}
        watch.remove(str(quiet))
        assert not watch.add(str(tmp_path / "gone"))
    finally:
        watch.close()


async def test_an_attempt_is_found_again_from_its_folder(
    host: tuple[Executor, SshLab | None],
) -> None:
    """What a daemon after a restart has: the attempt's folder, no pid, no start time; an
    attempt is running until its exit_code holds something."""
    executor, _ = host
    started = await _started(executor, _launch(executor, 2, 200, 0.05))
    assert await executor.attempt_exists(2, 1) and not await executor.attempt_exists(2, 2)
    folder_only = Attempt(executor.attempt_dir(2, 1), 0, None)
    found = await wait_until(
        lambda: _with_pid(executor, folder_only), what="the wrapper to record its pid"
    )
    assert isinstance(found, Attempt) and found.pid == started.pid
    assert await executor.probe(found) is ProcessState.RUNNING
    # The wrapper writes exit_code in one write, without a rename: until it is written, the
    # file may be there and empty, and that is no end.
    (Path(found.attempt_dir) / "exit_code").touch()
    assert await executor.probe(found) is ProcessState.RUNNING
    assert await executor.signal(found, signal.SIGKILL)
    # Gone, its wrapper killed with it; on a cluster, Slurm ends the job its own way (TERM,
    # then KILL), and the wrapper records the end.
    ends = (
        (ProcessState.GONE, ProcessState.EXITED)
        if executor.host.kind == "slurm"
        else (ProcessState.GONE,)
    )
    await wait_until(lambda: _in(executor, found, ends), what="the killed attempt to end")


async def _with_pid(executor: Executor, attempt: Attempt) -> Attempt | None:
    found = await executor.reattach(attempt)
    return found if found.pid else None


async def _in(executor: Executor, attempt: Attempt, states: tuple[ProcessState, ...]) -> bool:
    return await executor.probe(attempt) in states


async def test_a_signal_reaches_the_command_and_the_wrapper_records_it(
    host: tuple[Executor, SshLab | None],
) -> None:
    executor, _ = host
    attempt = await _started(executor, _launch(executor, 3, 200, 0.05))
    await wait_until(lambda: _printed(executor, attempt), what="the run printing")
    assert await executor.signal(attempt, signal.SIGTERM)
    ended = await asyncio.wait_for(executor.wait(attempt), 30)
    assert ended.exit_code == 128 + signal.SIGTERM  # the command died of it; the wrapper lived
    # The wrapper exits just after writing exit_code: then there is nothing left to signal.
    await wait_until(lambda: _nothing_to_signal(executor, attempt), what="the group gone")


async def _nothing_to_signal(executor: Executor, attempt: Attempt) -> bool:
    return not await executor.signal(attempt, 0)


async def _printed(executor: Executor, attempt: Attempt) -> bool:
    return await executor.output_size(attempt) > 0


async def test_artifacts_end_up_on_this_machine(host: tuple[Executor, SshLab | None]) -> None:
    executor, _ = host
    attempt = await executor.start(_launch(executor, 4, 1, 0.0))
    assert (await asyncio.wait_for(executor.wait(attempt), 30)).exit_code == 0
    fetched = await executor.fetch_artifacts(4)
    folder = fetched or Path(executor.run_dir(4)) / "artifacts"  # local runs write them here
    assert (folder / "made.txt").read_text() == "by the run"


async def test_an_unreachable_host_is_an_error_of_its_own_kind(
    host: tuple[Executor, SshLab | None],
) -> None:
    """Calls to a host that went away raise HostUnreachable (runs are waited for, not failed);
    once it is back, the attempt it was running is found as it is."""
    executor, lab = host
    if lab is None:
        pytest.skip("this machine (and a cluster reached from it) is always reachable")
    attempt = await executor.start(_launch(executor, 5, 100, 0.05))
    lab.hosts[0].kill()
    with pytest.raises(HostUnreachable):
        await asyncio.wait_for(executor.wait(attempt), 30)
    with pytest.raises(HostUnreachable):
        await executor.probe(attempt)
    lab.hosts[0].start()
    await asyncio.wait_for(executor.until_up(), 30)
    assert await executor.probe(attempt) is ProcessState.RUNNING
    assert (await asyncio.wait_for(executor.wait(attempt), 30)).exit_code == 0


async def test_a_host_says_step_by_step_whether_it_can_run(
    host: tuple[Executor, SshLab | None],
) -> None:
    executor, _ = host
    steps = await executor.diagnose()
    assert steps and all(ok for step, ok, _ in steps if step != "gpu"), steps  # no GPU here
