"""`runyard`: the control center. The app alone talks to the daemon, from workers; it hands data
down to widgets and screens and answers their messages."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Header, Input, Log, Static

from engine.client import (
    Client,
    ConfigError,
    DaemonError,
    DaemonGone,
    EngineError,
    load_project,
)
from engine.model import ACTIVE_STATUSES, RunStatus
from engine.protocol import (
    ALIAS_MOVED,
    EventsDropped,
    HostChanged,
    LogLines,
    MetricsAdded,
    RunChanged,
    SampleTaken,
)
from tui.engine_link import Connected, Disconnected, EngineEvents, EngineLink, Incompatible
from tui.log_follow import TAIL_BYTES, LogFollow, Read
from tui.runs_window import RunsWindow
from tui.screens import (
    CompareScreen,
    ConfirmScreen,
    GpuProcessesScreen,
    LauncherScreen,
    PromptScreen,
    RunDetailScreen,
)
from tui.widgets import (
    CHART_POINTS,
    FilterBar,
    Footer,
    HostPane,
    Lines,
    QueueTable,
    RunsTable,
    replace_lines,
)

LOG_MAX_LINES = 5000
HOST_REFRESH_S = 2.0
LOG_SETTLE_S = 0.1  # the cursor rests this long on a run before its log is fetched
RELOAD_DELAY_S = 0.5  # runs appearing or leaving the window reload it at most this often
UNFINISHED = {"queued", "assigned", "starting", "running", "unreachable"}
FOCUS_ACTIONS = {"logs", "filter"}  # their bindings are priority bindings
# The dashboard's own keys: on any other screen they neither act nor show.
DASHBOARD_ACTIONS = {
    "open_run",
    "launch",
    "cancel",
    "retry",
    "priority",
    "hold",
    "select",
    "compare",
    "alias",
    "gpu_processes",
    "metric_column",
    "sort",
    "sort_column",
    "reverse",
}


def closing_quietly(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A worker body that stops without error when the app closes under it (its widgets are
    gone: an event or a reply arrived during shutdown) or the daemon goes away (the engine
    worker says so and connects again)."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            await method(*args, **kwargs)
        except (NoMatches, DaemonGone):
            return

    return wrapper


class RunyardApp(App[int]):
    """Hosts at the top, then the queue, the runs table (a window the daemon sorts and
    filters) and the highlighted run's live log; screens for a run, the launcher, compare."""

    TITLE = "Runyard"
    CSS = """
    #hosts { height: auto; max-height: 50%; }
    QueueTable { height: auto; max-height: 5; }
    RunsTable { height: 2fr; min-height: 8; border: round $primary; }
    #cursor-line { padding: 0 1; background: $boost; }
    #log { height: 1fr; min-height: 4; max-height: 14; border: round $secondary; }
    #filter { height: 1; border: none; padding: 0 1; background: $boost; }
    #filter-error { height: 1; padding: 0 1; color: $error; display: none; }
    """
    # `/` and `l` move focus: as priority bindings they act as the key is read, so the keys
    # read with them (a paste, fast typing) go where focus went, not to the runs table's
    # actions. check_action keeps them to the dashboard.
    BINDINGS = [
        Binding("q", "quit", "Quit (runs go on)"),
        Binding("enter", "open_run", "Open", show=False),
        Binding("n", "launch", "New sweep"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("p", "priority", "Priority"),
        Binding("h", "hold", "Hold/release"),
        Binding("space", "select", "Select", show=False),
        Binding("C", "compare", "Compare"),
        Binding("a", "alias", "Alias"),
        Binding("G", "gpu_processes", "GPU processes"),
        Binding("M", "metric_column", "Metric column", show=False),
        Binding("l", "logs", "Logs", priority=True),
        Binding("s", "sort", "Sort"),
        *(
            Binding(str((i + 1) % 10), f"sort_column({i})", "Sort by column", show=False)
            for i in range(10)
        ),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter", priority=True),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, config_path: str | None = None) -> None:
        super().__init__()
        self.config_path = config_path
        self.client: Client | None = None
        self.project: Path | None = None
        self.log_follow = LogFollow()  # the run whose log is shown, and how far
        self.log_lock = asyncio.Lock()  # one gap or overlap read at a time
        self.pages_shown = 0  # windows loaded so far: tests and benchmarks wait on it
        self.reload_pending = False
        self.log_timer: Timer | None = None
        self.host_states: dict[str, str] = {}
        self.host_timer: Timer | None = None
        self.sweeps_told: set[str] = set()
        self.connections = 0  # to a daemon, so far: tests wait on it

    def compose(self) -> ComposeResult:
        yield Header()
        yield Vertical(id="hosts")
        yield QueueTable(id="queue")
        yield RunsTable(id="runs")
        yield Lines(id="cursor-line")
        yield Log(max_lines=LOG_MAX_LINES, id="log", auto_scroll=True)
        yield FilterBar(
            placeholder='/ filter: failed or lost  not host:gpu-box  val_auc>0.9  "any text"  (? for more)',
            id="filter",
        )
        yield Static("", id="filter-error")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "connecting…"
        table = self.dash.query_one(RunsTable)
        self.set_interval(1.0, table.tick)
        table.focus()
        self.follow_engine()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The dashboard's keys act (and show in the footer and help) only on the dashboard;
        the priority ones (a run's screen searches with `/`) not while the filter bar takes
        the key as text."""
        if action in FOCUS_ACTIONS:
            return self.screen is self.dash and not isinstance(self.focused, Input)
        # Another screen's footer and help list its own keys, not these.
        return action not in DASHBOARD_ACTIONS or self.screen is self.dash

    @property
    def runs_window(self) -> RunsWindow:
        """What the runs table shows and what was asked of the daemon for it."""
        return self.dash.query_one(RunsTable).window

    @property
    def dash(self) -> Screen:
        """The dashboard: the bottom screen, whichever screen is on top of it. While the app
        closes there is none: NoMatches, which a worker ends on quietly."""
        if not self.screen_stack:
            raise NoMatches("the app is closing: no dashboard")
        return self.screen_stack[0]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every action is also in the command palette (ctrl+p)."""
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            action = binding.action
            yield SystemCommand(
                binding.description,
                f"{binding.description} (key: {binding.key})",
                lambda action=action: self.run_action(action),
            )

    # --- the daemon ----------------------------------------------------------------------

    @work(exclusive=True, group="engine")
    async def follow_engine(self) -> None:
        """Keep linked to the daemon for as long as the app runs (see EngineLink)."""
        await EngineLink(self, self.config_path).run()

    @on(Connected)
    async def connected(self, message: Connected) -> None:
        """Load what the daemon knows (its events since subscribing wait meanwhile)."""
        try:
            status = message.status
            self.client = message.client
            self.project = Path(status.config).parent
            await self.load_state()
            self.reload_soon()  # once the changes that raced the load are applied
            self.sub_title = f"{status.config}  ·  daemon {status.pid}"
            self.connections += 1
            if self.connections > 1:
                self.caught_up(status.pid)
        except NoMatches:
            pass  # the app closes under it
        except (DaemonError, EngineError, OSError) as exc:
            message.error = exc
        finally:
            message.handled.set()

    @on(EngineEvents)
    async def engine_events(self, message: EngineEvents) -> None:
        try:
            await self.apply(message.batch)
        except NoMatches:
            pass  # the app closes under it
        except (DaemonError, EngineError, OSError) as exc:
            message.error = exc
        finally:
            message.handled.set()

    @on(Disconnected)
    def disconnected(self, message: Disconnected) -> None:
        if message.never_connected:
            self.exit(1, message=f"runyard: {message.error}")  # say why, and go
            return
        if message.first_try:
            self.notify(f"{message.error}; connecting again…", title="daemon", severity="warning")
        self.sub_title = f"no daemon: {message.error}  ·  connecting again…"

    @on(Incompatible)
    def incompatible(self, message: Incompatible) -> None:
        self.exit(
            1,
            message=f"runyard: the daemon sent an event this version cannot read ({message.error}); "
            "it may be from another Runyard version: `engine stop`, then start runyard again",
        )

    async def load_state(self) -> None:
        """The host panes, then the runs window where it was (the first on the first load)."""
        assert self.client is not None
        hosts = (await self.client.hosts()).hosts
        pane_box = self.dash.query_one("#hosts", Vertical)
        panes = {pane.host: pane for pane in self.dash.query(HostPane)}
        for name in panes.keys() - {host.name for host in hosts}:
            await panes.pop(name).remove()  # gone from hosts.toml since the last daemon
        for host in hosts:
            if host.name not in panes:
                panes[host.name] = HostPane(host.name)
                await pane_box.mount(panes[host.name])
            panes[host.name].show(host.state, host.reason, host.sample, host.gpus, host.since)
            self.host_states[host.name] = host.state
        if self.host_timer is None:
            self.host_timer = self.set_interval(HOST_REFRESH_S, self.refresh_hosts)
        await self.fetch_page(self.runs_window.offset)

    def caught_up(self, pid: int) -> None:
        """Connected again: say so, and re-read what events may have been missed meanwhile
        (the open run's details and metrics, the followed log's tail)."""
        self.notify(f"connected to the daemon again (pid {pid})", title="daemon")
        self.log_follow.stop()
        detail = next((s for s in self.screen_stack if isinstance(s, RunDetailScreen)), None)
        if detail is not None:
            self.fill_detail(detail)
        elif (run_id := self.runs_window.cursor_run) is not None:
            self.show_log(run_id)

    @closing_quietly
    async def apply(self, batch: list) -> None:
        table = self.dash.query_one(RunsTable)
        latest: dict[int, dict[str, tuple[int | None, float]]] = {}
        detail = self.screen if isinstance(self.screen, RunDetailScreen) else None
        cursor = table.window.cursor_run
        cursor_changed = False
        for event in batch:
            if isinstance(event, RunChanged):
                cursor_changed |= event.run.id == cursor
                if not table.upsert(event.run) or event.reason == ALIAS_MOVED:
                    self.reload_soon()
                self.tell(event)
                if detail is not None and detail.run_id == event.run.id:
                    detail.ended = event.run.status.terminal
                    detail.update_title()
                if event.run.id == self.log_follow.run and event.run.status.terminal:
                    self.title_log(event.run.id)
            elif isinstance(event, MetricsAdded):
                values = latest.setdefault(event.run_id, {})
                for key, step, value, _line in event.points:
                    values[key] = (step, value)
                if detail is not None and detail.run_id == event.run_id:
                    detail.add_points(event.points)
            elif isinstance(event, SampleTaken):
                for pane in self.dash.query(HostPane):
                    if pane.host == event.sample.host:
                        pane.show(pane.state, pane.reason, event.sample, since=pane.since)
                if isinstance(self.screen, GpuProcessesScreen) and event.sample.gpus:
                    self.refresh_gpu_processes()
            elif isinstance(event, LogLines):
                await self.add_log(event)
            elif isinstance(event, HostChanged):
                self.host_changed(event)
            elif isinstance(event, EventsDropped):
                self.reload_soon()
        for run_id, values in latest.items():
            table.set_metrics(run_id, values)
        if cursor_changed or cursor in latest:
            self.show_cursor_line()

    def tell(self, event: RunChanged) -> None:
        """Notify what deserves it: a run failing or lost, a sweep ending."""
        run = event.run
        if event.previous == run.status:
            return
        if run.status is RunStatus.FAILED:
            self.notify(f"run {run.id} {run.name} failed: {run.reason}", severity="error")
        elif run.status is RunStatus.LOST:
            self.notify(f"run {run.id} {run.name} lost: {run.reason}", severity="warning")
        if run.status.terminal and run.sweep and run.sweep not in self.sweeps_told:
            self.check_sweep(run.sweep)

    @work(group="sweeps")
    @closing_quietly
    async def check_sweep(self, sweep: str) -> None:
        if self.client is None or sweep in self.sweeps_told:
            return
        status = await self.client.sweep_status(sweep)
        if not UNFINISHED & set(status.counts) and sweep not in self.sweeps_told:
            self.sweeps_told.add(sweep)
            counts = ", ".join(f"{n} {s}" for s, n in sorted(status.counts.items()))
            self.notify(f"sweep {sweep} finished: {counts}", title="sweep done")

    def host_changed(self, event: HostChanged) -> None:
        old = self.host_states.get(event.host)
        self.host_states[event.host] = event.state
        for pane in self.dash.query(HostPane):
            if pane.host == event.host:
                pane.show(event.state, event.reason, None, since=event.since)
        if event.state == "unreachable":
            self.notify(f"host {event.host} unreachable: {event.reason}", severity="warning")
        elif event.state == "up" and old == "unreachable":
            self.notify(f"host {event.host} is back")

    @work(exclusive=True, group="hosts")
    @closing_quietly
    async def refresh_hosts(self) -> None:
        """Host states, GPU reservations and the queue change without events: poll them."""
        if self.client is None:
            return
        panes = {pane.host: pane for pane in self.dash.query(HostPane)}
        for host in (await self.client.hosts()).hosts:
            if host.name in panes:
                panes[host.name].show(host.state, host.reason, None, host.gpus, host.since)
        view = await self.client.queue(limit=QueueTable.MOST)
        self.dash.query_one(QueueTable).show(view.entries)

    # --- the runs window ---------------------------------------------------------------------

    def reload_soon(self) -> None:
        if not self.reload_pending:
            self.reload_pending = True
            self.set_timer(RELOAD_DELAY_S, self.reload)

    def reload(self) -> None:
        self.reload_pending = False
        if self.screen_stack:  # a timer may fire while the app closes
            self.load_page(self.runs_window.offset)

    @work(exclusive=True, group="page")
    @closing_quietly
    async def load_page(self, offset: int, reset: bool = False) -> None:
        await self.fetch_page(offset, reset)

    async def fetch_page(self, offset: int, reset: bool = False) -> None:
        if self.client is None:
            return
        table = self.dash.query_one(RunsTable)
        view = table.window
        try:
            page = await self.client.runs_page(
                view.query, view.sort, view.descending, offset, view.page_size
            )
        except EngineError as exc:
            self.show_filter_error(str(exc) if exc.status == 400 else None)
            if exc.status != 400:
                self.notify(str(exc), title="runs", severity="error")
            return
        self.show_filter_error(None)
        table.show_page(page, reset)
        self.pages_shown += 1
        where = (
            f"rows {page.offset + 1}–{page.offset + len(page.runs)} of {page.total:,}"
            if page.runs
            else "no runs match"
            if view.query
            else "no runs yet"
        )
        order = f"sorted by {view.sort} {'↓' if view.descending else '↑'}"
        shown = f"filter: {view.query}" if view.query else "no filter"
        table.border_subtitle = f"{where}  ·  {order}  ·  {shown}"  # no relayout, unlike a Static

    def show_filter_error(self, message: str | None) -> None:
        """Say under the filter bar why the filter cannot be read (None: it can)."""
        line = self.dash.query_one("#filter-error", Static)
        if message is None:
            line.display = False
            return
        line.update(f"filter: {message.removeprefix('bad query: ')}")
        line.display = True

    @on(RunsTable.WindowWanted)
    def window_wanted(self, event: RunsTable.WindowWanted) -> None:
        self.load_page(event.offset)

    def action_sort(self) -> None:
        self.runs_window.next_sort()
        self.load_page(0, reset=True)

    def action_sort_column(self, index: int) -> None:
        """Sort by the column with this number (1-0), or the other way when it is sorted."""
        columns = RunsTable.COLUMNS
        if index < len(columns) and self.runs_window.sort_by_column(columns[index][0]):
            self.dash.query_one(RunsTable).refresh()  # the header's ▼/▲
            self.load_page(0, reset=True)
        elif index < len(columns):
            self.notify(f"the {columns[index][1]} column does not sort", severity="warning")

    def action_reverse(self) -> None:
        self.runs_window.descending = not self.runs_window.descending
        self.load_page(0, reset=True)

    def action_filter(self) -> None:
        """Focus the filter bar (always shown, so focusing it moves nothing on screen) now,
        not after the keys read with `/`: they are the filter's text."""
        self.dash.set_focus(self.dash.query_one("#filter", Input))

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        """Filter as you type: each change asks the daemon for the first window again (a newer
        change cancels the older request)."""
        text = event.value.strip()
        if text != self.runs_window.query:
            self.runs_window.query = text
            self.clear_selection()  # a selection is of the runs on screen: a new view ends it
            self.load_page(0, reset=True)

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.dash.query_one(RunsTable).focus()

    def key_escape(self) -> None:
        box = self.dash.query_one("#filter", Input)
        if box.has_focus or self.dash.query_one("#log", Log).has_focus:  # back to the table
            self.dash.query_one(RunsTable).focus()
        elif self.screen is self.dash:
            self.clear_selection()

    # --- the log tail --------------------------------------------------------------------------

    @on(RunsTable.Highlighted)
    def run_highlighted(self, event: RunsTable.Highlighted) -> None:
        """Follow the highlighted run's log once the cursor rests on it (scrolling through
        rows does not fetch every log on the way)."""
        run_id = event.run_id
        self.show_cursor_line()
        if run_id == self.log_follow.run:
            return
        if self.log_timer is not None:
            self.log_timer.stop()
        self.log_timer = self.set_timer(LOG_SETTLE_S, lambda: self.show_log(run_id))

    def show_cursor_line(self) -> None:
        """The cursor's run in full under the table: what its columns cut short."""
        table = self.dash.query_one(RunsTable)
        self.dash.query_one("#cursor-line", Lines).show(table.cursor_line(), most=3)

    @work(exclusive=True, group="log")
    @closing_quietly
    async def show_log(self, run_id: int) -> None:
        """Show the tail of a run's log and follow it on from the byte where the tail ended.
        It is followed before the tail is read, so no line printed meanwhile is missed: those
        lines wait for the tail, and only what the tail lacks of them is added."""
        if self.client is None:
            return
        self.log_follow.start(run_id)
        await self.client.follow_logs([run_id])
        data, end, _ = await self.client.log(run_id, offset=-TAIL_BYTES)
        show, held = self.log_follow.tail(data, end)
        detail = self._detail_for(run_id)
        if detail is not None:
            detail.show_log(show.lines, show.end)
        else:
            replace_lines(self.dash.query_one("#log", Log), show.lines)
            self.title_log(run_id)
        for event in held:
            await self.add_log(event)

    def title_log(self, run_id: int) -> None:
        """The dashboard log's title: whose log, and whether it still grows."""
        run = self.runs_window.runs.get(run_id)
        state = "ended" if run is not None and run.status.terminal else "following"
        log = self.dash.query_one("#log", Log)
        log.border_title = f"log: run {run_id}: {state}"  # a title, not a Static: no relayout

    async def add_log(self, event: LogLines) -> None:
        async with self.log_lock:
            step = self.log_follow.event(event)
            if isinstance(step, Read):  # a gap or an overlap: read exactly the missing bytes
                assert self.client is not None
                data, _, _ = await self.client.log(
                    step.run_id, offset=step.start, max_bytes=step.max_bytes
                )
                step = self.log_follow.read(step, data)
            if step is None:
                return
            self.log_follow.shown(step)
            detail = self._detail_for(event.run_id)
            if detail is not None:
                detail.add_log(step.lines, step.end)
            else:
                self.dash.query_one("#log", Log).write_lines(step.lines)

    def _detail_for(self, run_id: int) -> RunDetailScreen | None:
        screen = self.screen_stack[-1] if self.screen_stack else None  # none: it closes
        if isinstance(screen, RunDetailScreen) and screen.run_id == run_id:
            return screen
        return None

    # --- actions on runs -------------------------------------------------------------------------

    def targets(self) -> list[int]:
        """The selected runs, else the one under the cursor."""
        return self.runs_window.targets()

    def action_select(self) -> None:
        table = self.dash.query_one(RunsTable)
        table.toggle_selected()
        self.show_selection()

    def clear_selection(self) -> None:
        table = self.dash.query_one(RunsTable)
        if table.window.selected:
            table.clear_selection()
            self.show_selection()

    def show_selection(self) -> None:
        """The runs table's title says how many runs are selected, so an action's targets are
        never out of sight."""
        count = len(self.runs_window.selected)
        self.dash.query_one(RunsTable).border_title = (
            f"runs  ·  {count} selected (space toggles, esc clears)" if count else None
        )

    async def confirmed(self, what: str, runs: list[int]) -> bool:
        """Ask before an action on several runs or on a running one, naming them."""
        table = self.dash.query_one(RunsTable)
        found = [table.window.runs.get(r) for r in runs]
        running = [r for r in found if r is not None and r.status in ACTIVE_STATUSES]
        if len(runs) <= 1 and not running:
            return True
        names = ", ".join(
            f"{run_id} {r.name} ({r.status})" if r else str(run_id)
            for run_id, r in zip(runs, found, strict=True)
        )
        return bool(
            await self.push_screen_wait(ConfirmScreen(f"{what} {len(runs)} run(s): {names}?"))
        )

    def action_logs(self) -> None:
        self.dash.set_focus(self.dash.query_one("#log", Log))

    def action_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    @work(group="act")
    async def action_cancel(self) -> None:
        await self._each("cancel", lambda c, r: c.cancel(r), "cancel requested")

    @work(group="act")
    async def action_retry(self) -> None:
        await self._each("retry", lambda c, r: c.retry(r), "queued again")

    @work(group="act")
    async def action_hold(self) -> None:
        table = self.dash.query_one(RunsTable)

        async def toggle(client: Client, run_id: int):  # type: ignore[no-untyped-def]
            run = table.window.runs.get(run_id)
            return await (client.release(run_id) if run and run.held else client.hold(run_id))

        await self._each("hold", toggle, "hold toggled")

    def action_priority(self) -> None:
        runs = self.targets()
        if not runs:
            return

        def chosen(answer: str | None) -> None:
            if answer is None:
                return
            try:
                priority = int(answer)
            except ValueError:
                self.notify(f"a priority is a whole number, not {answer!r}", severity="error")
                return
            self.set_priority(runs, priority)

        self.push_screen(PromptScreen(f"priority for run(s) {', '.join(map(str, runs))}"), chosen)

    def action_alias(self) -> None:
        """Name the cursor's run: champion, challenger (moved from the run it named)."""
        run_id = self.dash.query_one(RunsTable).window.cursor_run
        if run_id is None:
            return

        def chosen(answer: str | None) -> None:
            if answer:
                self.set_alias(answer.strip().removeprefix("@"), run_id)

        self.push_screen(PromptScreen(f"alias for run {run_id} (e.g. champion)"), chosen)

    @work(group="act")
    async def set_alias(self, name: str, run_id: int) -> None:
        if self.client is None:
            return
        try:
            moved = await self.client.set_alias(name, run_id)
        except EngineError as exc:
            self.notify(f"alias @{name}: {exc}", severity="error")
            return
        before = f" (was run {moved['previous']})" if moved["previous"] is not None else ""
        self.notify(f"@{name} now names run {run_id}{before}")

    @work(group="act")
    async def set_priority(self, runs: list[int], priority: int) -> None:
        await self._each(
            "priority", lambda c, r: c.set_priority(r, priority), f"priority {priority}", runs
        )

    async def _each(self, what: str, call, done: str, runs: list[int] | None = None) -> None:  # type: ignore[no-untyped-def]
        if self.client is None:
            return
        if runs is None:
            runs = self.targets()
            if not await self.confirmed(what, runs):
                return
        for run_id in runs:
            try:
                await call(self.client, run_id)
                self.notify(f"run {run_id}: {done}")
            except EngineError as exc:
                self.notify(f"run {run_id}: {exc}", title=what, severity="error")

    def action_open_run(self) -> None:
        """Open the run's screen at once, so the keys read with enter are the screen's, not
        the runs table's; then fill it."""
        run_id = self.runs_window.cursor_run
        if run_id is None or self.client is None:
            return
        screen = RunDetailScreen(run_id)
        self.fill_detail(screen, self.push_screen(screen))

    @work(group="act")
    @closing_quietly
    async def fill_detail(
        self, screen: RunDetailScreen, mounted: Awaitable[object] | None = None
    ) -> None:
        assert self.client is not None
        run_id = screen.run_id
        if mounted is not None:
            await mounted
        detail = await self.client.run(run_id)
        points = await self.client.metrics(run_id, max_points=CHART_POINTS)
        if screen not in self.screen_stack:
            return  # closed meanwhile
        screen.show_detail(detail)
        screen.show_points(points)
        self.log_follow.stop()  # re-read the tail into the detail screen's log
        self.show_log(run_id)

    @on(RunDetailScreen.Closed)
    def detail_closed(self) -> None:
        if not self.screen_stack:  # closed as the app quits: there is no dashboard to go back to
            return
        run_id = self.runs_window.cursor_run
        if run_id is not None:
            self.log_follow.stop()
            self.show_log(run_id)

    def action_metric_column(self) -> None:
        """The METRIC column shows another metric first (and sorts by it, if it sorted)."""
        chosen = self.runs_window.next_metric_column()
        self.notify(f"metric column: {chosen or 'each sweep’s metric'}", timeout=2)
        self.load_page(self.runs_window.offset)

    def action_gpu_processes(self) -> None:
        """Every GPU's processes, and which of our runs each belongs to (nvitop's view)."""
        self.push_screen(GpuProcessesScreen())
        self.refresh_gpu_processes()

    @work(exclusive=True, group="gpus")
    @closing_quietly
    async def refresh_gpu_processes(self) -> None:
        screen = self.screen
        if self.client is None or not isinstance(screen, GpuProcessesScreen):
            return
        runs = await self.client.runs([RunStatus.RUNNING])
        samples = {p.host: p.sample for p in self.dash.query(HostPane) if p.sample is not None}
        if self.screen is screen:
            screen.show(samples, runs)

    @on(GpuProcessesScreen.StopWanted)
    def stop_gpu_run(self, event: GpuProcessesScreen.StopWanted) -> None:
        run = event.run

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop_run(run.id)

        question = (
            f"stop run {run.id} {run.name} on {run.host}? SIGTERM to its processes, SIGKILL"
            " after the grace period"
        )
        self.push_screen(ConfirmScreen(question), answered)

    @work(group="act")
    async def stop_run(self, run_id: int) -> None:
        if self.client is None:
            return
        try:
            await self.client.cancel(run_id)
        except EngineError as exc:
            self.notify(f"run {run_id}: {exc}", severity="error")
            return
        self.notify(f"run {run_id}: stopping (SIGTERM)")

    def action_compare(self) -> None:
        """Open the compare screen at once, so the keys read with C are its own; then fill it."""
        runs = self.targets()
        if len(runs) < 2 or self.client is None:
            self.notify("select two or more runs with space, then C", severity="warning")
            return
        screen = CompareScreen(runs)
        self.clear_selection()  # compared: the next action is on the cursor's run again
        self.fill_compare(screen, self.push_screen(screen))

    @work(group="act")
    @closing_quietly
    async def fill_compare(self, screen: CompareScreen, mounted: Awaitable[object]) -> None:
        assert self.client is not None
        await mounted
        details = [await self.client.run(r) for r in screen.run_ids]
        points = {r: await self.client.metrics(r, max_points=CHART_POINTS) for r in screen.run_ids}
        if screen in self.screen_stack:  # else closed meanwhile
            sweeps = self.runs_window.sweep_metrics
            modes = {
                m["name"]: m.get("mode", "max")
                for d in details
                if (m := sweeps.get(d.run.sweep or "")) and m.get("name")
            }
            screen.show(details, points, modes)

    @on(CompareScreen.ReportWanted)
    @work(exclusive=True, group="report")
    async def report(self, event: CompareScreen.ReportWanted) -> None:
        if self.client is None:
            return
        if len(event.sweeps) != 1 or None in event.sweeps:
            self.notify(
                "export and report work on one sweep: compare runs of one sweep", severity="warning"
            )
            return
        [sweep] = event.sweeps
        assert sweep is not None
        out = (self.project or Path.cwd()) / "reports" / sweep
        what = "report" if event.plots else "export"
        try:
            made = await self.client.report(sweep, out, plots=event.plots)
        except EngineError as exc:
            self.notify(str(exc), title=what, severity="error")
            return
        self.notify(f"{what} of {sweep}: {len(made['files'])} files in {out}", title=what)

    def action_launch(self) -> None:
        folder = (self.project or Path.cwd()) / "experiments"
        files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
        self.push_screen(LauncherScreen(files))

    @on(LauncherScreen.Launch)
    @work(exclusive=True, group="launch")
    async def launch(self, event: LauncherScreen.Launch) -> None:
        if self.client is None:
            return
        screen = self.screen if isinstance(self.screen, LauncherScreen) else None
        if event.smoke:  # minutes, maybe: not cancelled by the next launch
            if self.screen is screen:
                self.pop_screen()
            self.run_worker(self.smoke_test(event.file, event.overrides), group="smoke")
            return
        try:
            plan = await self.client.sweep(event.file, event.overrides, cwd=str(self.project))
        except EngineError as exc:
            if screen is not None and screen in self.screen_stack:
                screen.show_plan(None, str(exc))
            else:  # closed meanwhile: the error still has to reach the user
                self.notify(str(exc), title="launch", severity="error")
            return
        if self.screen is screen:
            self.pop_screen()
        self.notify(f"sweep {plan.sweep} queued: {plan.trials} trials: {plan.where}")
        self.reload_soon()

    async def smoke_test(self, file: str, overrides: dict[str, str]) -> None:
        """Run an experiment's smoke test; queue its sweep if it passes, else say which runs
        failed, where and why (their logs are in the runs table)."""
        assert self.client is not None
        name = Path(file).name
        self.notify(f"smoke test of {name}: one run per model…", title="smoke test")
        self.reload_soon()
        try:
            report = await self.client.smoke_test(file, overrides, cwd=str(self.project))
        except EngineError as exc:
            self.notify(str(exc), title="smoke test", severity="error")
            return
        self.reload_soon()
        if report.full is None:
            failed = [f"{r.run.name}: {r.why}" for r in report.runs if not r.passed]
            self.notify(
                "\n".join([*failed[:4], "the sweep was not queued"]),
                title=f"smoke test {report.sweep} failed",
                severity="error",
                timeout=30,
            )
            return
        plan = report.full
        self.notify(
            f"smoke test passed; sweep {plan.sweep} queued: {plan.trials} trials: {plan.where}",
            title="smoke test",
        )

    @on(LauncherScreen.Preview)
    @work(exclusive=True, group="preview")
    async def preview(self, event: LauncherScreen.Preview) -> None:
        if self.client is None or not isinstance(self.screen, LauncherScreen):
            return
        screen = self.screen
        plan, error = None, None
        try:
            plan = await self.client.sweep(
                event.file, event.overrides, dry_run=True, cwd=str(self.project)
            )
        except EngineError as exc:
            error = str(exc)
        if screen in self.screen_stack:  # else the launcher was closed while the daemon planned
            screen.show_plan(plan, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="runyard", description="Runyard's terminal control center."
    )
    parser.add_argument("--config", metavar="PATH", help="the hosts.toml to use")
    args = parser.parse_args(argv)
    try:
        load_project(args.config)  # fail fast, before the screen opens, on a bad hosts.toml
    except ConfigError as exc:
        print(f"runyard: {exc}", file=sys.stderr)
        return 2
    return RunyardApp(args.config).run() or 0
