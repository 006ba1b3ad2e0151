"""`runyard`: the dashboard. The app alone talks to the daemon, from a worker; it hands data
down to the widgets."""

from __future__ import annotations

import argparse
import sys

import msgspec
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Log, Static

from engine.client import Client, ConfigError, DaemonError, EngineError, connect, load_project
from engine.protocol import EventsDropped, LogLines, MetricsAdded, RunChanged, SampleTaken
from tui.widgets import HostPane, RunsTable

LOG_TAIL_BYTES = 64 * 1024
LOG_MAX_LINES = 5000
RUNS_SHOWN = 500
HOST_REFRESH_S = 2.0


class RunyardApp(App[int]):
    """Hosts at the top, the runs table in the middle, the selected run's live log below."""

    TITLE = "Runyard"
    CSS = """
    #hosts { height: auto; }
    RunsTable { height: 1fr; min-height: 6; }
    #log-title { height: 1; background: $boost; padding: 0 1; }
    Log { height: 1fr; min-height: 5; border: round $secondary; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit (runs keep going)"),
        Binding("l", "focus_log", "Log"),
        Binding("t", "focus_runs", "Runs"),
    ]

    def __init__(self, config_path: str | None = None) -> None:
        super().__init__()
        self.config_path = config_path
        self.client: Client | None = None
        self.log_run: int | None = None
        self.log_offset = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Vertical(id="hosts")
        yield RunsTable(id="runs")
        yield Static("log: select a run", id="log-title")
        yield Log(max_lines=LOG_MAX_LINES, id="log", auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "connecting…"
        self.set_interval(1.0, self.query_one(RunsTable).tick)
        self.follow_engine()

    # --- the daemon ------------------------------------------------------------------------

    @work(exclusive=True, group="engine")
    async def follow_engine(self) -> None:
        try:
            self.client = await connect(self.config_path)
            status = await self.client.status()
            self.sub_title = f"{status.config}  ·  daemon {status.pid}"
            await self.load_state()
            async for batch in self.client.events(logs=[self.log_run] if self.log_run else []):
                await self.apply(batch)
        except (ConfigError, DaemonError, EngineError, OSError) as exc:
            self.exit(1, message=f"runyard: {exc}")
        except msgspec.ValidationError as exc:
            self.exit(
                1,
                message=f"runyard: the daemon sent an event this version cannot read ({exc}); "
                "it may be from another Runyard version: `engine stop`, then start runyard again",
            )
        finally:  # also when the app exits and cancels this worker
            if self.client is not None:
                await self.client.close()

    async def load_state(self) -> None:
        assert self.client is not None
        hosts = (await self.client.hosts()).hosts
        pane_box = self.query_one("#hosts", Vertical)
        for host in hosts:
            pane = HostPane(host.name)
            await pane_box.mount(pane)
            pane.show(host.state, host.reason, host.sample, host.gpus)
        self.set_interval(HOST_REFRESH_S, self.refresh_hosts)
        table = self.query_one(RunsTable)
        for run in reversed(await self.client.runs(limit=RUNS_SHOWN)):
            table.upsert(run)

    async def apply(self, batch: list) -> None:
        table = self.query_one(RunsTable)
        latest: dict[int, dict[str, float]] = {}
        for event in batch:
            if isinstance(event, RunChanged):
                table.upsert(event.run)
            elif isinstance(event, MetricsAdded):
                for key, _step, value, _line in event.points:
                    latest.setdefault(event.run_id, {})[key] = value
            elif isinstance(event, SampleTaken):
                for pane in self.query(HostPane):
                    if pane.host == event.sample.host:
                        pane.show(pane.state, pane.reason, event.sample)
            elif isinstance(event, LogLines) and event.run_id == self.log_run:
                await self.add_log(event)
            elif isinstance(event, EventsDropped):
                await self.reload_runs()
        for run_id, values in latest.items():
            table.set_metrics(run_id, values)

    @work(exclusive=True, group="hosts")
    async def refresh_hosts(self) -> None:
        """Host states and GPU reservations change without an event of their own: poll them."""
        if self.client is None:
            return
        panes = {pane.host: pane for pane in self.query(HostPane)}
        for host in (await self.client.hosts()).hosts:
            if host.name in panes:
                panes[host.name].show(host.state, host.reason, None, host.gpus)

    async def reload_runs(self) -> None:
        assert self.client is not None
        table = self.query_one(RunsTable)
        for run in reversed(await self.client.runs(limit=RUNS_SHOWN)):
            table.upsert(run)

    # --- the log tail ------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#runs")
    def run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = int(event.row_key.value) if event.row_key.value is not None else None
        if run_id is not None and run_id != self.log_run:
            self.show_log(run_id)

    @work(exclusive=True, group="log")
    async def show_log(self, run_id: int) -> None:
        """Show the tail of a run's log, then follow it from the byte where the tail ended."""
        if self.client is None:
            return
        self.log_run = run_id
        log = self.query_one(Log)
        log.clear()
        data, end, _ = await self.client.log(run_id, offset=-LOG_TAIL_BYTES)
        whole = data[: data.rfind(b"\n") + 1]  # a half-written last line comes with its event
        self.log_offset = end - (len(data) - len(whole))
        log.write_lines(_lines(whole, clipped=end > len(data)))
        self.query_one("#log-title", Static).update(f"log: run {run_id}")
        await self.client.follow_logs([run_id])

    async def add_log(self, event: LogLines) -> None:
        log = self.query_one(Log)
        if event.end <= self.log_offset:
            return  # already shown by the tail we fetched
        if event.start == self.log_offset and not event.skipped:
            log.write_lines(event.lines)
        else:  # a gap or an overlap: read exactly the missing bytes, at most a tail's worth
            assert self.client is not None
            start = max(self.log_offset, event.end - LOG_TAIL_BYTES)
            data, _, _ = await self.client.log(
                event.run_id, offset=start, max_bytes=event.end - start
            )
            log.write_lines(_lines(data, clipped=start > self.log_offset))
        self.log_offset = event.end

    def action_focus_log(self) -> None:
        self.query_one(Log).focus()

    def action_focus_runs(self) -> None:
        self.query_one(RunsTable).focus()


def _lines(data: bytes, clipped: bool) -> list[str]:
    lines = data.decode("utf-8", "replace").splitlines()
    if clipped and lines:
        lines[0] = "…"  # the first line was cut by the tail
    return lines


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
