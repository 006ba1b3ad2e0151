"""The control center through Pilot against a real daemon: the runs window over a large store,
run detail, actions, the launcher, compare, and the command palette."""

from __future__ import annotations

import asyncio
import signal
import sys

from textual import events
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Checkbox, Footer, Input, Log, Markdown, Static
from textual.worker import Worker, WorkerState

from engine.client import Client, connect
from engine.model import RunStatus
from tui.app import RunyardApp
from tui.screens import CompareScreen, ConfirmScreen, LauncherScreen, RunDetailScreen
from tui.widgets import HostPane, Lines, MetricChart, RunsTable, middle_cut, thin

from .conftest import HOSTS, Project, fill_store, shown_notifications, wait_until
from .test_daemon import job, ticker
from .test_sweeps import make_project


async def test_the_runs_window_pages_sorts_and_filters_a_large_store(short_tmp) -> None:  # type: ignore[no-untyped-def]
    project = Project(short_tmp, HOSTS.format(max_jobs=2))
    fill_store(project.state_dir, 1000)
    await project.start_daemon()
    app = RunyardApp(str(project.config_path))
    told = shown_notifications(app)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.dash.query_one(RunsTable)
            await wait_until(lambda: table.window.total == 1000, what="the first window")
            assert table.row_count == table.window.page_size < 1000  # a window, not every run
            assert table.window.cursor_run == 1000  # newest first
            shown = app.pages_shown
            await pilot.press("end")
            await wait_until(lambda: table.window.cursor_run == 1, what="the last run loaded")
            assert app.pages_shown > shown and table.window.offset > 0
            await pilot.press("home")
            await wait_until(lambda: table.window.cursor_run == 1000, what="back at the top")
            # filter: every 7th run failed; the bar is on screen, not under the footer
            bar, footer = app.dash.query_one("#filter"), app.dash.query_one(Footer)
            assert bar.region.height == 1 and not bar.region.overlaps(footer.region)
            await pilot.press("slash")
            await pilot.press(*"failed", "enter")
            await wait_until(lambda: table.window.total == 142, what="the failed runs")
            assert {r.status for r in table.window.rows} == {RunStatus.FAILED}
            assert "filter: failed" in str(table.border_subtitle)
            # a metric filter and a sort by that metric
            await pilot.press("slash")
            app.dash.query_one("#filter").value = "auc>0.99"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await wait_until(lambda: 0 < table.window.total < 1000, what="the auc filter")
            assert all(table.window.latest[r.id]["auc"]["last"] > 0.99 for r in table.window.rows)
            app.runs_window.sort = "family"  # the next sort key after it: the first metric, auc
            shown = app.pages_shown
            await pilot.press("s")
            await wait_until(
                lambda: app.runs_window.sort == "metric:auc" and app.pages_shown > shown
            )
            values = [table.window.latest[r.id]["auc"]["last"] for r in table.window.rows]
            assert values == sorted(values, reverse=True)
            await pilot.press("S")
            await wait_until(lambda: not app.runs_window.descending and app.pages_shown > shown + 1)
            values = [table.window.latest[r.id]["auc"]["last"] for r in table.window.rows]
            assert values == sorted(values)
            # a filter nothing matches says so
            await pilot.press("slash")
            app.dash.query_one("#filter").value = "no-run-is-called-this"  # type: ignore[attr-defined]
            await wait_until(lambda: table.window.total == 0, what="no runs")
            assert str(table.border_subtitle).startswith("no runs match  ·")
            # a bad filter is said under the bar, not a crash and not an empty table
            error = app.dash.query_one("#filter-error", Static)
            for bad, said in (
                ("status:sleeping", "unknown status 'sleeping'"),
                ("val_auc>abc", "'val_auc>abc': 'abc' is not a number"),
            ):
                app.dash.query_one("#filter").value = bad  # type: ignore[attr-defined]
                await wait_until(
                    lambda said=said: error.display and said in str(error.render()),
                    what=f"{bad} said under the bar",
                )
                await wait_until(  # just under the filter bar, once laid out
                    lambda: error.region.height == 1 and error.region.y == bar.region.y + 1
                )
            assert not told  # said there, not as a toast
            app.dash.query_one("#filter").value = "failed or lost"  # type: ignore[attr-defined]
            await wait_until(lambda: table.window.total == 142 and not error.display)
            await pilot.press("enter")
            # sort by a column's number: the header says which, and which way
            await pilot.press("1")
            await wait_until(lambda: app.runs_window.sort == "id", what="sorted by ID")
            assert "1:ID ▼" in table.header_text()
            await pilot.press("1")
            await wait_until(lambda: not app.runs_window.descending, what="ID the other way")
            assert "1:ID ▲" in table.header_text()
            await wait_until(lambda: table.window.rows and table.window.rows[0].id == 7)
    finally:
        project.cleanup()


async def test_actions_on_runs_and_notifications(client: Client, daemon: Project) -> None:
    marker = daemon.folder / "second-try"
    flaky = f"import os, sys\nif not os.path.exists({str(marker)!r}):\n    open({str(marker)!r}, 'w').close(); print('bad config'); sys.exit(3)\nprint('fine')"
    [bad] = await client.submit([job(daemon, [sys.executable, "-c", flaky], name="flaky")])
    await client.wait(bad.id, 30)
    [waiting] = await client.submit(
        [job(daemon, ["true"], name="waiting", requires=("no-such-tag",), wait_for_host=True)]
    )
    [slow] = await client.submit([ticker(daemon, 1000, 0.05, name="slow")])
    app = RunyardApp(str(daemon.config_path))
    told = shown_notifications(app)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await wait_until(lambda: table.row_count == 3, what="three runs")
        # the slow run is on top: cancel it
        assert table.window.cursor_run == slow.id
        await wait_until(lambda: table.window.runs[slow.id].status is RunStatus.RUNNING)
        await wait_until(lambda: "loss=" in on_screen(table, "slow"), what="its metric drawn")
        drawn = on_screen(table, "slow")
        await wait_until(lambda: on_screen(table, "slow") != drawn, what="its new values drawn")
        await pilot.press("c")  # a running run: asked first, naming it
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert f"{slow.id} slow (running)" in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("y")
        await wait_until(
            lambda: table.window.runs[slow.id].status is RunStatus.CANCELLED, what="slow cancelled"
        )
        await wait_until(lambda: "cancelled" in on_screen(table, "slow"), what="cancel drawn")
        # the queued one: priority 7, then hold
        await pilot.press("down")
        await wait_until(lambda: table.window.cursor_run == waiting.id)
        await pilot.press("p")
        await pilot.press(*"7", "enter")
        await wait_until(lambda: table.window.runs[waiting.id].priority == 7, what="priority 7")
        await pilot.press("h")
        await wait_until(lambda: table.window.runs[waiting.id].held, what="held")
        await wait_until(lambda: "(held)" in on_screen(table, "waiting"), what="hold drawn")
        # the failed one: retried, it succeeds on its second attempt
        await pilot.press("down")
        await wait_until(lambda: table.window.cursor_run == bad.id)
        await pilot.press("r")
        await wait_until(
            lambda: table.window.runs[bad.id].status is RunStatus.SUCCEEDED,
            what="the retry succeeded",
        )
        assert table.window.runs[bad.id].attempt == 2
        # a run failing now is notified
        [boom] = await client.submit(
            [job(daemon, [sys.executable, "-c", "raise SystemExit(5)"], name="boom")]
        )
        await wait_until(
            lambda: any(f"run {boom.id} boom failed" in m for m in told),
            what="the failure notified",
        )
        # every action is in the command palette
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Cancel", "Retry", "Priority", "Hold/release", "Compare", "New sweep"} <= titles
    await client.cancel(waiting.id)


async def test_actions_act_only_on_what_the_user_sees(client: Client, daemon: Project) -> None:
    done = [await client.submit([job(daemon, ["true"], name=f"done-{i}")]) for i in range(3)]
    for [run] in done:
        await client.wait(run.id, 30)
    first, second, third = (r for [r] in done)
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await wait_until(lambda: table.row_count == 3, what="three runs")
        await pilot.press("space", "down", "space")  # third and second selected
        assert table.window.selected == {third.id, second.id}
        assert "2 selected" in str(table.border_title) and "●" in on_screen(table, "done-2")
        await pilot.press("r")  # several runs: asked first, naming them
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        question = app.screen.question  # type: ignore[attr-defined]
        assert f"{third.id} done-2 (succeeded)" in question and f"{second.id} done-1" in question
        await pilot.press("n")
        await wait_until(lambda: app.screen is app.dash, what="back on the dashboard")
        await pilot.press("escape")  # esc clears the selection
        assert not table.window.selected and "selected" not in str(table.border_title or "")
        # a selection ends with the view it was made in: a new filter clears it
        await pilot.press("space")
        assert table.window.selected
        await pilot.press("slash", *"done-0", "enter")
        await wait_until(lambda: table.window.total == 1, what="only done-0")
        assert not table.window.selected
        # with one run on screen and nothing selected, an action is on that run alone, unasked
        with_one = app.targets()
        assert with_one == [first.id]
    events_of = [(await client.run(r.id)).details["events"] for r in (first, second, third)]
    assert all(len(e) == len(events_of[0]) for e in events_of)  # nothing was acted on


def on_screen(table: RunsTable, name: str) -> str:
    """A run's line as the screen would show it now: from the table's cache of drawn lines,
    which keeps a line until the table marks it for redrawing, so a change the table forgets
    to redraw stays unseen here too."""
    lines = table.render_lines(Region(0, 0, table.size.width, table.size.height))
    return next((line.text for line in lines if f" {name} " in line.text), "")


async def test_run_detail_shows_facts_charts_and_a_searchable_log(
    client: Client, daemon: Project
) -> None:
    [run] = await client.submit([ticker(daemon, 3000, 0.02, name="detailed", seed=7)])
    await wait_until(lambda: _points(client, run.id, 20), what="some points")
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_detail(app, pilot, run.id)
        await wait_until(lambda: "loss" in screen.series, what="the metric curves")
        facts = str(screen.query_one("#facts-text").render())
        assert "seed 7" in facts and "commit" in facts and "detailed" in facts
        log = screen.query_one("Log")
        await wait_until(lambda: len(log.lines) > 5, what="the log tail")  # type: ignore[attr-defined]
        grown = len(screen.series["loss"])
        await wait_until(lambda: len(screen.series["loss"]) > grown, what="live points")
        await wait_until(  # enough shown to search: "plain line 3", "… 30", "… 31"
            lambda: sum("plain line 3" in line for line in log.lines) >= 3,  # type: ignore[attr-defined]
            what="three lines to find",
        )
        await pilot.press("f")  # pause: new lines are held, not shown
        assert not screen.following
        held = len(log.lines)  # type: ignore[attr-defined]
        await wait_until(lambda: screen.held, what="lines held while paused")
        assert len(log.lines) == held  # type: ignore[attr-defined]
        await pilot.press("slash")
        await pilot.press(*"plain line 3", "enter")
        await wait_until(lambda: screen.matches, what="search matches")
        assert "plain line 3" in log.lines[screen.matches[screen.match]]  # type: ignore[attr-defined]
        assert len(screen.matches) >= 3 and screen.match == 0
        assert log.has_focus  # back in the log: n and N step through the matches
        assert log.highlight and log.highlighter.needle == "plain line 3"  # type: ignore[attr-defined]
        await pilot.press("n")  # the next match, in view
        assert screen.match == 1
        await wait_until(lambda: log.scroll_offset.y == min(screen.matches[1], log.max_scroll_y))  # type: ignore[attr-defined]
        await pilot.press("N")  # and back
        assert screen.match == 0
        await pilot.press("escape", "n", "n")  # the box closed, n goes on
        assert screen.match == 2
        await pilot.press("m")
        assert screen.metric_index == 0
        assert isinstance(screen.query_one(MetricChart), MetricChart)
        await pilot.press("f")  # following again; the run ends: its log says so
        await client.cancel(run.id)
        await wait_until(lambda: f"run {run.id}: ended" in str(log.border_title), what="ended")
        await pilot.press("escape")
        await wait_until(lambda: not isinstance(app.screen, RunDetailScreen), what="back")


async def _points(client: Client, run_id: int, n: int) -> bool:
    return len(await client.metrics(run_id)) >= n


async def open_detail(app: RunyardApp, pilot: Pilot[int], run_id: int) -> RunDetailScreen:
    """Press enter on a run once the table lists it (newest first: at the cursor); its screen."""
    table = app.dash.query_one(RunsTable)
    await wait_until(lambda: table.window.cursor_run == run_id, what="the run listed")
    await pilot.press("enter")
    await wait_until(lambda: isinstance(app.screen, RunDetailScreen), what="the detail")
    assert isinstance(app.screen, RunDetailScreen)
    return app.screen


async def open_launcher(app: RunyardApp, pilot: Pilot[int]) -> tuple[LauncherScreen, Static]:
    """Press n on the dashboard; the launcher, once it previews the project's one experiment
    (12 trials), and its plan."""
    await wait_until(lambda: app.pages_shown > 0, what="the dashboard")
    await pilot.press("n")
    await wait_until(lambda: isinstance(app.screen, LauncherScreen), what="the launcher")
    launcher = app.screen
    assert isinstance(launcher, LauncherScreen)
    plan = launcher.query_one("#plan", Static)
    await wait_until(lambda: "12 trials" in str(plan.render()), what="the preview")
    return launcher, plan


async def test_the_launchers_smoke_toggle_runs_the_smoke_test_before_the_sweep(
    daemon: Project,
) -> None:
    """With "smoke test first" ticked, enter runs one trial per model, then queues the sweep;
    a smoke run that fails says so and queues nothing."""
    exp = make_project(daemon)
    app = RunyardApp(str(daemon.config_path))
    told = shown_notifications(app)

    async def launch_after_a_smoke_test(pilot: Pilot[int]) -> None:
        launcher, _ = await open_launcher(app, pilot)
        launcher.query_one("#smoke", Checkbox).value = True
        launcher.query_one("#overrides").focus()
        await pilot.press("enter")

    async with app.run_test(size=(160, 48)) as pilot:
        await launch_after_a_smoke_test(pilot)
        await wait_until(
            lambda: any("smoke test passed; sweep toy-1 queued: 12 trials" in m for m in told),
            timeout=60,
            what="the smoke test to pass and the sweep to be queued",
        )
        exp.write_text(exp.read_text().replace("train.py", "missing.py"))
        await launch_after_a_smoke_test(pilot)
        await wait_until(
            lambda: any("the sweep was not queued" in m for m in told),
            timeout=60,
            what="the failed smoke test",
        )
        failed = next(m for m in told if "the sweep was not queued" in m)
        assert "toy-smoke-2-000-s0: failed on local: exit code 2" in failed, failed
    client = await connect(daemon.config, start=False)
    try:
        assert sorted(s.id for s in await client.sweeps()) == [
            "toy-1",
            "toy-smoke-1",
            "toy-smoke-2",
        ]
    finally:
        await client.close()


async def test_the_launcher_previews_and_launches_a_sweep_and_compare_shows_two_runs(
    daemon: Project,
) -> None:
    make_project(daemon)
    app = RunyardApp(str(daemon.config_path))
    told = shown_notifications(app)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        launcher, plan = await open_launcher(app, pilot)
        assert "→ local" in str(plan.render())
        # Before launching: the estimate (none yet) and the files git has not committed.
        assert "12 trials on local: no history to estimate from" in str(plan.render())
        assert "uncommitted: ?? .gitignore, ?? experiments/toy.toml" in str(plan.render())
        launcher.query_one("#overrides").value = "seeds=[0]"  # type: ignore[attr-defined]
        await wait_until(lambda: "6 trials" in str(plan.render()), what="the new preview")
        await pilot.press("enter")
        await wait_until(lambda: not isinstance(app.screen, LauncherScreen), what="launched")
        await wait_until(lambda: table.window.total == 6, timeout=30, what="the sweep's runs")
        client = await connect(daemon.config, start=False)
        try:
            await wait_until(lambda: _all_done(client), timeout=60, what="the sweep to finish")
        finally:
            await client.close()
        await wait_until(
            lambda: any("sweep toy-1 finished" in m for m in told),
            what="the sweep notified",
        )
        await wait_until(lambda: all(r.status.terminal for r in table.window.rows))
        await pilot.press("space", "down", "space")
        for key in ("C", "e"):  # read together, as fast typing is: e exports from compare
            app.post_message(events.Key(key, key))
        await wait_until(lambda: isinstance(app.screen, CompareScreen), what="compare")
        compare = app.screen
        assert isinstance(compare, CompareScreen)
        await wait_until(lambda: len(compare.runs) == 2, what="the two runs loaded")
        assert compare.keys == ["score"]
        grid = compare.query_one("DataTable")
        rows = [[str(cell) for cell in grid.get_row_at(i)] for i in range(grid.row_count)]  # type: ignore[attr-defined]
        assert any(r[0].startswith("≠ ") for r in rows)  # a parameter that differs is marked
        [score] = [r for r in rows if r[0].strip() == "score last"]
        assert all("(best " in cell for cell in score[1:]), score  # the sweep's metric: max
        labels = [str(c.label) for c in grid.columns.values()][1:]  # type: ignore[attr-defined]
        assert labels == [f"{r.id} {r.name}" for r in compare.runs]  # whole names: they fit
        # Each run's name in its curve's colour, in place of a legend drawn over the curves.
        styles = [str(c.label.style) for c in grid.columns.values()][1:]  # type: ignore[attr-defined]
        assert styles == ["bold cyan", "bold magenta"]
        # b pins the cursor's run (the second column) as the baseline: first, the other's Δ.
        second = compare.runs[1]
        grid.move_cursor(column=2)  # type: ignore[attr-defined]
        await pilot.press("b")
        await wait_until(lambda: compare.baseline == second.id, what="the baseline pinned")
        labels = [str(c.label) for c in grid.columns.values()][1:]  # type: ignore[attr-defined]
        assert labels[0] == f"baseline {second.id} {second.name}"
        rows = [[str(cell) for cell in grid.get_row_at(i)] for i in range(grid.row_count)]  # type: ignore[attr-defined]
        [score] = [r for r in rows if r[0].strip() == "score last"]
        assert " Δ " not in score[1] and " Δ " in score[2], score
        # export (the e typed with C) and report of the compared runs' sweep, by the daemon
        await wait_until(
            lambda: any("export of toy-1" in m for m in told),
            what="the export notified",
        )
        reports = daemon.folder / "reports" / "toy-1"
        assert (reports / "configs.csv").exists() and not list(reports.glob("*.png"))
        await pilot.press("R")
        await wait_until(
            lambda: any("report of toy-1" in m for m in told),
            what="the report notified",
        )
        assert (reports / "index.md").exists() and list(reports.glob("score_vs_*.png"))
        assert (reports / "importance.png").stat().st_size > 10_000  # 6 configurations: fANOVA


async def test_closing_the_launcher_while_the_daemon_plans_loses_nothing(
    daemon: Project,
) -> None:
    """The preview and the launch wait on the daemon; escape in that moment closes the launcher,
    the preview's answer is dropped and the launch still queues its sweep."""
    make_project(daemon)
    assert daemon.daemon is not None
    app = RunyardApp(str(daemon.config_path))
    told = shown_notifications(app)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        launcher, _ = await open_launcher(app, pilot)
        daemon.daemon.send_signal(signal.SIGSTOP)  # the daemon's answers wait until SIGCONT
        try:
            launcher.query_one("#overrides", Input).value = "seeds=[0]"  # a new preview
            await pilot.press("enter")  # and the launch

            def waiting() -> list[Worker[None]]:
                return [
                    w
                    for w in app.workers
                    if w.group in ("preview", "launch") and w.state is WorkerState.RUNNING
                ]

            await wait_until(
                lambda: len(waiting()) == 2, what="the preview and the launch awaiting the daemon"
            )
            workers = waiting()
            assert {w.group for w in workers} == {"preview", "launch"}
            await pilot.press("escape")
            await wait_until(lambda: app.screen is app.dash, what="the dashboard again")
        finally:
            daemon.daemon.send_signal(signal.SIGCONT)
        await wait_until(lambda: all(w.is_finished for w in workers), what="both answered")
        assert [w.state for w in workers] == [WorkerState.SUCCESS] * 2, workers
        await wait_until(
            lambda: any("sweep toy-1 queued" in m for m in told),
            what="the launch notified",
        )
        await wait_until(lambda: table.window.total == 6, timeout=30, what="the sweep's runs")
        assert app.screen is app.dash


def _plain_lines(log: Log) -> list[int]:
    """The numbers of the ticker's plain lines a log pane shows, in order."""
    return [int(line.split()[-1]) for line in log.lines if line.startswith("plain line ")]


async def test_the_control_center_outlives_its_daemon_and_catches_up(daemon: Project) -> None:
    """The daemon killed under the TUI is a state shown, not a crash: the app starts a new
    daemon, and the run, which outlived the old one, goes on in the table and the log."""
    client = await connect(daemon.config, start=False)
    try:
        [run] = await client.submit([ticker(daemon, 5000, 0.02, name="steady")])
    finally:
        await client.close()
    app = RunyardApp(str(daemon.config_path))
    told = shown_notifications(app)
    async with app.run_test(size=(160, 48)):
        table = app.dash.query_one(RunsTable)
        log = app.dash.query_one("#log", Log)
        await wait_until(lambda: app.log_follow.run == run.id and _plain_lines(log), what="its log")
        daemon.kill_daemon(signal.SIGKILL)
        await wait_until(
            lambda: any("connecting again" in m for m in told),
            what="the daemon's loss told",
        )
        await wait_until(lambda: app.connections == 2, timeout=30, what="a new daemon")
        assert any("connected to the daemon again" in m for m in told)
        shown = _plain_lines(log)[-1]
        await wait_until(lambda: _plain_lines(log)[-1] > shown + 20, what="the log going on")
        await wait_until(lambda: log.is_vertical_scroll_end, what="its view following the end")
        numbers = _plain_lines(log)
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), "lines lost or repeated"
        assert len(app.dash.query(HostPane)) == 1  # the panes refreshed, not mounted again
        assert table.window.runs[run.id].status is RunStatus.RUNNING
        again = await connect(daemon.config, start=False)  # the daemon the app started
        try:
            now = (await again.run(run.id)).run
            assert now.status is RunStatus.RUNNING and now.attempt == 1  # not restarted
            await again.cancel(run.id)
        finally:
            await again.close()


async def test_a_followed_runs_lines_arriving_as_the_app_closes_are_no_crash(
    daemon: Project,
) -> None:
    """A batch of events the app is still handling when its last screen goes (it closes), and
    one that comes after: the followed run's new lines are dropped quietly, each batch still
    counts as handled, and nothing is raised."""
    from engine.protocol import LogLines
    from tui.engine_link import EngineEvents

    def lines_of_a_followed_run() -> EngineEvents:
        app.log_follow.start(7)
        app.log_follow.tail(b"", 0)  # its tail is in: the next event's lines are to be shown
        return EngineEvents([LogLines(run_id=7, attempt=1, start=0, end=4, lines=["abc"])])

    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)):
        await wait_until(lambda: app.client is not None, what="the app linked to the daemon")
        await app.log_lock.acquire()  # the batch waits on it, its dashboard found
        during = lines_of_a_followed_run()
        handling = asyncio.create_task(app.engine_events(during))
        await wait_until(lambda: app.log_lock._waiters, what="the batch waiting on the log")
    assert not app.screen_stack
    app.log_lock.release()
    await handling
    after = lines_of_a_followed_run()
    await app.engine_events(after)
    for message in (during, after):
        assert message.handled.is_set() and message.error is None


async def test_keys_pressed_while_the_daemon_is_down_are_no_crash(daemon: Project) -> None:
    """Keys that read from the daemon (moving the selection follows another run's log, enter
    opens a run) while it is stopped and restarted: the app says so and carries on."""
    client = await connect(daemon.config, start=False)
    try:
        runs = await client.submit(
            [ticker(daemon, 5000, 0.02, name=f"steady-{i}") for i in range(2)]
        )
    finally:
        await client.close()
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await wait_until(
            lambda: len(table.window.runs) == 2 and app.log_follow.run, what="both runs"
        )
        daemon.kill_daemon(signal.SIGTERM)
        pressed = 0
        while app.connections < 2 or pressed < 20:
            await pilot.press("down" if pressed % 2 else "up")
            pressed += 1
            if pressed % 5 == 0:
                await pilot.press("enter", "escape")
            await pilot.pause(0.05)
            assert app.is_running, "the app exited"
            assert pressed < 2000, "no new daemon"
        assert app.return_code is None
        await wait_until(lambda: app.log_follow.run is not None, what="a log followed again")
        again = await connect(daemon.config, start=False)
        try:
            for run in runs:
                await again.cancel(run.id)
        finally:
            await again.close()


def test_compare_cuts_long_run_names_in_the_middle_where_they_are_alike() -> None:
    a, b = "ensemble-mlp-001-learning-rate-s1", "ensemble-mlp-001-learning-rate-s2"
    assert middle_cut(a, 16) == "ensembl…-rate-s1" and middle_cut(b, 16).endswith("-s2")
    assert all(len(middle_cut(a, w)) == w for w in range(2, len(a)))
    assert middle_cut("short", 16) == "short"


def test_a_long_live_curve_is_thinned_to_its_shape() -> None:
    """As the daemon thins a curve for a chart, so does the run screen as live points pile up:
    about `most` points are kept, with both ends, and no spike or dip is lost."""
    curve = [(float(i), 1 / (i + 1)) for i in range(10_000)]
    curve[4321], curve[77] = (4321.0, 9.0), (77.0, -1.0)
    thinned = thin(curve, 400)
    assert 200 <= len(thinned) <= 402 and thinned == sorted(thinned)
    assert thinned[0] == curve[0] and thinned[-1] == curve[-1]
    assert (4321.0, 9.0) in thinned and (77.0, -1.0) in thinned
    assert thin(curve[:300], 400) == curve[:300]


async def _all_done(client: Client) -> bool:
    runs = await client.runs(sweep="toy-1", limit=None)
    return len(runs) == 6 and all(r.status.terminal for r in runs)


async def test_keys_typed_in_a_burst_after_a_focus_key_go_where_focus_went(
    client: Client, daemon: Project
) -> None:
    """A terminal delivers a paste or a fast typist's keys together: what follows `/` is the
    filter's text and what follows enter is the run screen's, never the runs table's actions."""
    make_project(daemon)
    [run] = await client.submit([ticker(daemon, 3000, 0.02, name="busy")])
    app = RunyardApp(str(daemon.config_path))
    told = shown_notifications(app)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await wait_until(lambda: table.window.cursor_run == run.id, what="the run listed")
        await wait_until(lambda: table.window.runs[run.id].status is RunStatus.RUNNING)

        def burst(*keys: str) -> None:  # as the driver posts them: no pause between keys
            for key in keys:
                character = "/" if key == "slash" else key if len(key) == 1 else None
                app.post_message(events.Key(key, character))

        bar = app.dash.query_one("#filter", Input)
        burst("slash", "c", "r", "slash", "h", "p")  # a second / is text too
        await wait_until(lambda: bar.value == "cr/hp", what="the whole burst in the filter")
        await pilot.press("ctrl+u", "escape")  # the filter emptied; back to the table
        await wait_until(lambda: app.focused is table and table.window.cursor_run == run.id)
        burst("enter", "f")  # f: pause the run screen's log
        await wait_until(lambda: isinstance(app.screen, RunDetailScreen), what="the run")
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        await wait_until(lambda: not detail.following, what="its log paused by the f")
        burst("escape", "n", "c", "h")
        await wait_until(lambda: isinstance(app.screen, LauncherScreen), what="the launcher")
        burst("escape")
        await wait_until(lambda: app.screen is app.dash, what="the dashboard again")
        await wait_until(lambda: all(w.is_finished for w in app.workers if w.group == "act"))
        told = list(told)
        assert not [m for m in told if "requested" in m or "toggled" in m], told
        now = (await client.run(run.id)).run
        assert now.status is RunStatus.RUNNING and not now.held
    await client.cancel(run.id)


async def test_the_footer_and_help_list_the_keys_of_the_screen_in_focus(
    client: Client, daemon: Project
) -> None:
    """The dashboard's keys (cancel, retry, new sweep, sort …) show and act on the dashboard
    only; a run's screen lists its own (metric, follow, search); `?` beside the runs table
    shows the filter's language."""
    [run] = await client.submit([job(daemon, ["true"], name="helped")])
    await client.wait(run.id, 30)
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await wait_until(lambda: table.window.cursor_run == run.id, what="the run listed")

        def shown() -> set[str]:
            return {b.binding.description for b in app.screen.active_bindings.values()}

        assert {"Cancel", "Retry", "New sweep", "Sort", "Compare", "Alias"} <= shown()
        line = app.dash.query_one("#cursor-line", Lines)
        await wait_until(lambda: "helped" in line.text.plain, what="the cursor's run in full")
        assert "succeeded" in line.text.plain and "exit code 0" in line.text.plain
        log = app.dash.query_one("#log", Log)
        await wait_until(lambda: log.border_title == f"log: run {run.id}: ended", what="ended")
        await pilot.press("question_mark")
        await wait_until(lambda: app.screen.query("HelpPanel"), what="the help panel")
        panel = app.screen.query_one("HelpPanel").query_one("#widget-help", Markdown)
        await wait_until(lambda: "not host:gpu-box" in panel.source, what="the filter's help")
        assert '"exit code 3"' in panel.source
        await pilot.press("question_mark", "enter")
        await wait_until(lambda: isinstance(app.screen, RunDetailScreen), what="the detail")
        here = shown()
        assert {
            "One metric",
            "Grid",
            "Smooth",
            "Log y",
            "Follow/pause",
            "Search log",
            "Back",
        } <= here
        assert not here & {"Cancel", "Retry", "New sweep", "Sort", "Compare", "Alias"}
        await pilot.press("c")  # not the dashboard's cancel here
        await pilot.press("escape")
        await wait_until(lambda: not isinstance(app.screen, RunDetailScreen), what="back")


async def test_run_detail_charts_every_metric_in_a_grid_with_smoothing_log_y_and_time(
    client: Client, daemon: Project
) -> None:
    [run] = await client.submit([ticker(daemon, 40, 0.0, name="gridded")])
    await client.wait(run.id, 30)
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_detail(app, pilot, run.id)
        await wait_until(lambda: set(screen.series) == {"loss", "acc"}, what="both metrics")
        charts = list(screen.query(MetricChart))

        def shown() -> list[MetricChart]:
            return [c for c in charts if c.display]

        await wait_until(lambda: len(shown()) == 2, what="a chart per metric")
        left, right = shown()
        assert left.region.y == right.region.y and left.region.x < right.region.x  # side by side
        await pilot.press("m")  # one metric alone
        await wait_until(lambda: len(shown()) == 1)
        await pilot.press("g")  # the grid again
        await wait_until(lambda: len(shown()) == 2)
        await pilot.press("e", "y", "x")
        assert (screen.view.smoothing, screen.view.log_y, screen.view.wall_time) == (
            0.6,
            True,
            True,
        )
        assert screen.view.describe() == "EMA 0.6, log y, x: seconds"
        timed = [x for x, _ in screen.timed["loss"]]
        assert timed == sorted(timed) and len(timed) == 40  # drawn against when each was read
        await pilot.press("escape")


async def test_gpu_processes_name_our_runs_and_k_stops_one(client: Client, daemon: Project) -> None:
    """nvitop's view: each GPU's processes, most memory first, ours named by their run (its
    process group); `k` asks, then stops the run through the daemon. No GPU here: the samples
    are as NVML would give them for a real run's process."""
    from engine.model import GpuProcess, GpuSample, HostSample
    from tui.screens import GpuProcessesScreen

    [run] = await client.submit([job(daemon, ["sleep", "60"], name="on-gpu")])
    await wait_until(lambda: _running_pid(client, run.id), what="the run's pid")
    pid = (await client.run(run.id)).run.pid
    assert pid is not None
    gpu = GpuSample(
        index=0,
        name="H100",
        mem_used_mb=9000.0,
        mem_total_mb=81920.0,
        util_percent=90.0,
        processes=(GpuProcess(pid + 1, 6144.0, pid), GpuProcess(1, 2048.0, 1)),
    )
    sample = HostSample(
        host="local",
        time=0.0,
        cpu_percent=0.0,
        cpu_per_core=(),
        mem_used_mb=0.0,
        mem_total_mb=1.0,
        gpus=(gpu,),
    )
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.dash.query_one(RunsTable)
        await wait_until(lambda: table.window.cursor_run == run.id, what="the run listed")
        await pilot.press("G")
        await wait_until(lambda: isinstance(app.screen, GpuProcessesScreen), what="the view")
        screen = app.screen
        assert isinstance(screen, GpuProcessesScreen)
        running = [(await client.run(run.id)).run]
        screen.show({"local": sample}, running)
        assert [(r[3], r[4], r[5].id if r[5] else None) for r in screen.rows] == [
            (pid + 1, 6144.0, run.id),  # ours, by its process group
            (1, 2048.0, None),
        ]
        summary = str(screen.query_one("#gpu-summary", Static).render())
        assert "2 processes on 1 GPUs of 1 hosts, holding 8.0 GiB" in summary
        await pilot.press("down", "k")  # not ours: refused
        await pilot.press("up", "k")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="asked first")
        await pilot.press("y")
        ended = await client.wait(run.id, 30)
        assert ended.status is RunStatus.CANCELLED


async def _running_pid(client: Client, run_id: int) -> bool:
    run = (await client.run(run_id)).run
    return run.status is RunStatus.RUNNING and run.pid is not None


async def test_a_short_screen_charts_one_row_of_metrics(client: Client, daemon: Project) -> None:
    four = 'import json\nfor s in range(5): print("@runyard", json.dumps({"step": s, "a": s, "b": s, "c": s, "d": s}))'
    [run] = await client.submit([job(daemon, [sys.executable, "-c", four], name="four")])
    await client.wait(run.id, 30)
    app = RunyardApp(str(daemon.config_path))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_detail(app, pilot, run.id)
        charts = list(screen.query(MetricChart))
        await wait_until(lambda: sum(c.display for c in charts) == 4, what="two rows of two")
        await pilot.resize_terminal(100, 30)
        await wait_until(lambda: sum(c.display for c in charts) == 2, what="one row at 100×30")
        await pilot.press("m")  # one alone, then each in turn
        await wait_until(lambda: sum(c.display for c in charts) == 1)
