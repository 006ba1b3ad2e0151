"""The first TUI screen, driven by Pilot against a real daemon."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Awaitable
from types import SimpleNamespace

import msgspec
import psutil
import pytest
from textual import events
from textual.app import App
from textual.css.query import NoMatches
from textual.widgets import Log

from engine.client import Client
from engine.model import RunStatus
from engine.protocol import GpuCapacity
from engine.telemetry import LocalSampler, Nvml
from tui.app import RunyardApp
from tui.screens import PromptScreen
from tui.widgets import Footer, HostPane, RunsTable, TypedInput

from .conftest import Project, wait_until
from .test_daemon import burst, job, ticker


async def test_dashboard_shows_host_runs_and_a_live_log_and_q_leaves_runs_running(
    client: Client, daemon: Project
) -> None:
    [quick] = await client.submit(
        [job(daemon, [sys.executable, "-c", "print('hello from quick')"], name="quick")]
    )
    await client.wait(quick.id, 30)
    [slow] = await client.submit([ticker(daemon, 400, 0.05, name="slow")])

    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(RunsTable)
        await wait_until(lambda: table.row_count == 2, what="both runs in the table")
        # the host pane: one bar per core, memory, and the GPU line or why there is none
        pane = app.query_one(HostPane)
        await wait_until(lambda: pane.sample is not None, what="a host sample")
        detail = pane.detail_text().plain
        assert detail.count("cpu") == psutil.cpu_count()
        assert "GiB" in detail
        assert "gpu0" in detail or "no NVIDIA GPU" in detail
        # the table updates live: the slow run's status and its latest metrics
        await wait_until(lambda: "loss=" in table.metrics_text(slow.id), what="live metrics")
        assert table.window.runs[slow.id].status is RunStatus.RUNNING
        assert table.window.runs[quick.id].status is RunStatus.SUCCEEDED
        # the log tail follows the selected run
        log = app.query_one(Log)
        await wait_until(lambda: app.log_follow.run == slow.id, what="the newest run selected")
        await pilot.press("down")
        await wait_until(lambda: app.log_follow.run == quick.id, what="the older run selected")
        await wait_until(lambda: "hello from quick" in "\n".join(log.lines), what="quick's log")
        await pilot.press("up")
        await wait_until(lambda: app.log_follow.run == slow.id, what="the slow run selected")
        await wait_until(lambda: any("plain line" in line for line in log.lines), what="slow's log")
        seen = len(log.lines)
        await wait_until(lambda: len(log.lines) > seen + 4, what="new lines as they are printed")
        steps = [int(line.split()[-1]) for line in log.lines if line.startswith("plain line")]
        assert steps == list(range(steps[0], steps[0] + len(steps))), (
            "a gap or duplicate in the tail"
        )
        await pilot.press("q")
    assert app.return_code in (0, None)
    running = (await client.run(slow.id)).run
    assert running.status is RunStatus.RUNNING and psutil.pid_exists(running.pid)
    await client.cancel(slow.id)
    await client.wait(slow.id, 30)


async def test_the_log_pane_shows_a_burst_bigger_than_an_event_without_a_gap(
    client: Client, daemon: Project
) -> None:
    """A followed run prints 1.2 MB at once, more than a log event carries: the pane reads
    back what the events left out and ends on the burst's last line, after an unbroken run of
    the lines before it."""
    go = daemon.folder / "go"
    [run] = await client.submit([burst(daemon, go, 20_000, 600, name="burst")])
    app = RunyardApp(str(daemon.config_path))
    try:
        async with app.run_test(size=(120, 40)):
            log = app.query_one(Log)
            await wait_until(
                lambda: app.log_follow.run == run.id and app.log_follow.offset,
                what="the run's tail shown",
            )
            shown = log.line_count
            await wait_until(lambda: log.line_count > shown, what="followed lines")
            go.touch()
            await wait_until(
                lambda: log.lines[-1].startswith("burst line 19999"), what="the last line"
            )
            tail = [line for line in log.lines if line.startswith("burst line")]
            numbers = [int(line.split()[2]) for line in tail]
            assert numbers == list(range(20_000 - len(numbers), 20_000))
            assert len(numbers) > 1000  # a tail's worth (64 KiB), not one event's 500 lines
            assert log.lines[-len(numbers) - 1] == "…"  # where the read-back tail was cut
    finally:
        await client.cancel(run.id)
        await client.wait(run.id, 30)


async def test_the_log_pane_follows_the_end_of_each_run_it_switches_to(
    client: Client, daemon: Project
) -> None:
    """From a log scrolled to its end to a longer one: the pane shows the new log's end and
    keeps following it. (A cleared Textual Log keeps its scroll offset, and a Log follows only
    a view already at its end, so the view used to stay where the shorter log had ended.)"""
    [long] = await client.submit([ticker(daemon, 20_000, 0.005, name="long")])

    async def printed(run_id: int) -> int:
        return (await client.log(run_id))[0].count(b"\n")

    await wait_until(lambda: _at_least(printed(long.id), 400), what="the long log")
    [short] = await client.submit([ticker(daemon, 5000, 0.05, name="short")])
    app = RunyardApp(str(daemon.config_path))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            log = app.query_one(Log)
            await wait_until(
                lambda: app.log_follow.run == short.id and log.max_scroll_y > 0,
                what="the short log filling the pane",
            )
            await wait_until(lambda: log.is_vertical_scroll_end, what="its view at its end")
            await pilot.press("down")
            await wait_until(
                lambda: app.log_follow.run == long.id and app.log_follow.offset, what="long's"
            )
            shown = log.line_count
            await wait_until(lambda: log.line_count > shown, what="lines after its tail")
            await wait_until(lambda: log.is_vertical_scroll_end, what="the view at its end")
            assert log.scroll_offset.y > 400 - log.size.height  # not the short log's place
    finally:
        await client.cancel(long.id)
        await client.cancel(short.id)


async def test_the_cursor_stays_on_screen_when_the_queue_above_grows(
    client: Client, daemon: Project
) -> None:
    """New runs queue: the queue pane above the runs table grows and the table shrinks, and
    the run under the cursor, now at the bottom, stays in view."""
    [first] = await client.submit([job(daemon, ["sleep", "60"], name="first")])
    app = RunyardApp(str(daemon.config_path))
    try:
        async with app.run_test(size=(100, 30)):
            table = app.query_one(RunsTable)
            await wait_until(lambda: table.window.cursor_run == first.id, what="the run")
            tall = table.scrollable_content_region.height
            await client.submit([job(daemon, ["sleep", "60"], name=f"n{i}") for i in range(24)])
            await wait_until(
                lambda: table.window.total == 25 and table.scrollable_content_region.height < tall,
                what="the queue pane grown, the table shrunk",
            )

            def on_screen() -> bool:
                top, rows = int(table.scroll_offset.y), table.scrollable_content_region.height
                return (
                    table.window.cursor_run == first.id
                    and top <= table.window.cursor < top + rows - 1
                )

            await wait_until(on_screen, what="the cursor's run on screen")
    finally:
        for run in await client.runs(statuses=["queued", "assigned", "starting", "running"]):
            await client.cancel(run.id)


async def test_an_input_acts_on_a_burst_of_keys_in_the_order_typed() -> None:
    """Keys read together (a paste, tmux send-keys) edit a prompt as typed one by one: the
    editing keys are not overtaken by the characters after them."""

    class Prompting(App[None]):
        answers: list[str | None] = []

        def on_mount(self) -> None:
            self.push_screen(PromptScreen("priority", value="12"), self.answers.append)

    app = Prompting()
    async with app.run_test() as pilot:
        await wait_until(lambda: isinstance(app.focused, TypedInput), what="the prompt")
        for key in ("ctrl+u", "3", "left", "4", "enter"):  # as the driver posts them
            app.post_message(events.Key(key, key if len(key) == 1 else None))
        await wait_until(lambda: app.answers, what="the answer")
        await pilot.pause()
    assert app.answers == ["43"]


async def test_a_timer_firing_as_the_app_closes_does_nothing(daemon: Project) -> None:
    """The runs window's reload is a timer, which may fire while the app closes (CI saw it):
    with no screens left it does nothing, and a worker reaching for the dashboard stops on
    NoMatches, which workers end on quietly."""
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(120, 40)):
        await wait_until(lambda: app.pages_shown > 0, what="the first window")
    assert not app.screen_stack
    app.reload()  # as its timer does
    with pytest.raises(NoMatches):
        app.dash  # noqa: B018


async def _at_least(count: Awaitable[int], least: int) -> bool:
    return await count >= least


async def test_moving_focus_again_and_again_leaves_no_old_footer_keys_alive(
    daemon: Project,
) -> None:
    """The footer redraws its keys once for a focus change that changes them, and not for one
    that does not. The keys it drops are freed, or a long session grows and its garbage
    collections pause the screen ever longer."""
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(lambda: app.pages_shown > 0, what="the dashboard")
        footer = app.dash.query_one(Footer)
        redraws = footer.redraws

        def keys() -> list[str]:
            return [key.key for key in footer.query("FooterKey")]

        for _ in range(10):
            await pilot.press("slash")  # the filter bar takes letters: c, r, … leave the footer
            await wait_until(lambda: "c" not in keys(), what="fewer keys")
            await pilot.press("escape", "l")  # the table, then the log: the same keys
            await wait_until(lambda: app.focused is app.dash.query_one("#log"))
        await pilot.pause()
        assert footer.redraws - redraws <= 20, "one redraw for each change of keys"
        gc.collect()
        alive = [o for o in gc.get_objects() if type(o).__name__ == "FooterKey"]
        shown = len(keys())
        assert len(alive) <= 2 * shown, f"{len(alive)} footer keys alive, {shown} shown"


def test_a_bad_config_stops_runyard_before_the_screen_opens(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tui.app import main

    bad = tmp_path / "hosts.toml"
    bad.write_text("[hosts.local]\nkind = 3\n")
    assert main(["--config", str(bad)]) == 2
    assert f"{bad}:2: hosts.local.kind" in capsys.readouterr().err


class FakeNvml:
    """Stands in for pynvml where no GPU exists; shaped like its API for one 80 GB GPU."""

    NVML_TEMPERATURE_GPU = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(used=12 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=87)

    def nvmlDeviceGetTemperature(self, h: int, kind: int) -> int:
        return 64

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 312_000

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30),  # gone by the time it is read
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=None),
        ]


def test_gpu_lines_from_nvml_reach_the_host_pane() -> None:
    sample = LocalSampler("gpu-box", Nvml(FakeNvml())).sample()
    [gpu] = sample.gpus
    assert (gpu.name, gpu.mem_used_mb, gpu.mem_total_mb, gpu.util_percent) == (
        "NVIDIA H100 80GB HBM3",
        12288,
        81920,
        87,
    )
    assert (gpu.temperature_c, gpu.power_w) == (64, 312)
    # Each process with its process group: a run's is its wrapper's pid.
    assert [(p.pid, p.mem_mb, p.group) for p in gpu.processes] == [
        (4242, 3072.0, None),
        (os.getpid(), 0.0, os.getpgid(os.getpid())),
    ]
    pane = HostPane("gpu-box")
    idle = msgspec.structs.replace(gpu, util_percent=10.0)
    pane.record(msgspec.structs.replace(sample, gpus=(idle,)))
    pane.record(sample)
    pane.capacity = (GpuCapacity(0, 81920, 69632, 4096, runs=(12, 15)),)
    line = pane.detail_text().plain.splitlines()[-1]
    assert line.startswith("gpu0 H100 80GB HBM3 ")
    assert "12.0/80 GiB" in line and "64°C" in line and "312W" in line
    assert "util       ▁▇  87%" in line  # the utilisation history, oldest first
    assert len(line) <= 96  # fits a 100-column screen inside the pane's border and padding
    assert line.endswith("312W  runs 12 15")


def test_without_nvml_the_sample_says_why() -> None:
    class Missing(FakeNvml):
        def nvmlInit(self) -> None:
            raise OSError("NVML Shared Library Not Found")

    sample = LocalSampler("laptop", Nvml(Missing())).sample()
    assert sample.gpus == () and sample.gpu_error.startswith("no NVIDIA GPU")


def test_declared_gpus_show_what_runs_hold() -> None:
    from engine.model import HostSample

    pane = HostPane("gpu-box")
    pane.sample = HostSample("gpu-box", 1.0, 5.0, (5.0,), 1024.0, 4096.0, gpu_error="no NVIDIA GPU")
    pane.capacity = (
        GpuCapacity(0, 24 * 1024, 24 * 1024, 10 * 1024, runs=(3, 7)),
        GpuCapacity(1, 24 * 1024, 24 * 1024, 0),
    )
    lines = pane.detail_text().plain.splitlines()
    assert lines[-2].startswith("gpu0 declared 24 GiB") and lines[-2].endswith(
        "10.0 GiB by runs 3 7"
    )
    assert lines[-1].endswith(" 0.0 GiB") and "no NVIDIA GPU" not in pane.detail_text().plain


def test_a_cluster_pane_shows_its_partition_and_our_jobs() -> None:
    """A Slurm host's pane: the partition's nodes by state, CPUs and GPUs in use, and our
    jobs with the oldest pending reason, in place of a machine's cores and GPUs."""
    from engine.core.slurm import parse_sinfo
    from engine.model import ClusterSample, HostSample

    counts = parse_sinfo(
        "n1|idle|gpu:a100:4(S:0-1)|gpu:a100:0(IDX:N/A)|0/64/0/64|gpu*|\n"
        "n2|mix|gpu:4|gpu:3|40/24/0/64|gpu*|\n"
        "n3|alloc|gpu:4|gpu:4|64/0/0/64|gpu*|\n"
        "n4|down*|gpu:4|gpu:0|0/0/64/64|gpu*|\n"
        "n2|mix|gpu:4|gpu:3|40/24/0/64|debug|\n"  # in two partitions: counted once
    )
    cluster = ClusterSample(
        **counts, jobs_pending=5, jobs_running=2, oldest_pending_reason="Resources"
    )
    pane = HostPane("uni")
    pane.record(HostSample("uni", 1.0, 40.0, (), 0.0, 0.0, cluster=cluster))
    text = pane.detail_text().plain
    assert "nodes 1 idle, 1 mixed, 1 allocated, 1 down" in text
    assert "104/256 in use" in text and "7/16 in use" in text
    assert "ours  2 running, 5 pending (oldest: Resources)" in text
    assert "CPUs in use  40.0%" in pane.title_text().plain


def test_chart_smoothing_and_step_ticks() -> None:
    from tui.widgets.metric_chart import integer_ticks, smooth

    assert smooth([1.0, 1.0, 1.0], 0.9) == [1.0, 1.0, 1.0]
    assert smooth([0.0, 10.0], 0.0) == [0.0, 10.0]  # no smoothing: the values
    ema = smooth([0.0, 10.0, 10.0], 0.5)
    assert ema == [0.0, 5.0, 7.5]  # TensorBoard's EMA with weight 0.5
    assert integer_ticks(0, 39) == [0, 8, 16, 24, 32]
    assert integer_ticks(0.5, 3.2) == [1, 2, 3]  # whole steps only
    assert integer_ticks(2.2, 2.8) == [3]
