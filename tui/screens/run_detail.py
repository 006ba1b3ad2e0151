"""A run's screen: its facts, metric charts and live log."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Log, Static

from engine.model import format_duration
from engine.protocol import RunDetail
from tui.widgets.cells import highlight_matches, replace_lines
from tui.widgets.footer import Footer
from tui.widgets.metric_chart import (
    CHART_POINTS,
    CHART_REDRAW_S,
    SMOOTHING,
    ChartView,
    MetricChart,
    curves,
    thin,
)
from tui.widgets.typed_input import TypedInput

LOG_MAX_LINES = 20_000
GRID_CHARTS = 4  # metrics charted at once on a run's screen
TALL_SCREEN = 40  # lines a screen needs for two rows of charts to be read


class RunDetailScreen(Screen[None]):
    """One run: params and manifest, attempts with their failure classes, metric charts, and
    its live log, which can be paused, searched and scrolled back."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("m", "next_metric", "One metric"),
        Binding("g", "grid", "Grid"),
        Binding("e", "smoothing", "Smooth"),
        Binding("y", "log_y", "Log y"),
        Binding("x", "wall_time", "x: step/time"),
        Binding("f", "toggle_follow", "Follow/pause"),
        Binding("slash", "search", "Search log"),
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "previous_match", "Previous match", show=False),
    ]
    CSS = """
    RunDetailScreen #facts { height: 12; max-height: 33%; border: round $primary; padding: 0 1; }
    RunDetailScreen #charts { height: 1fr; min-height: 10; grid-size: 2; grid-gutter: 0 1; }
    RunDetailScreen #charts.single { grid-size: 1; }
    RunDetailScreen MetricChart { height: 1fr; min-height: 5; }
    RunDetailScreen Log { height: 1fr; min-height: 6; border: round $secondary; }
    RunDetailScreen Input { dock: bottom; display: none; }
    RunDetailScreen Input.shown { display: block; }
    """

    class Closed(Message):
        """The screen is gone: its run's log need not be followed for it any more."""

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.series: dict[str, list[tuple[float, float]]] = {}  # by step
        self.timed: dict[str, list[tuple[float, float]]] = {}  # by wall time
        self.metric_index = -1  # the metric shown alone; -1: the grid of every metric
        self.view = ChartView()
        self.following = True
        self.held: list[str] = []  # lines that arrived while paused
        self.matches: list[int] = []
        self.match = 0
        self.searched = ""  # the text the matches are of
        self.ended = False  # the run has ended: its log grows no more
        self.log_offset = 0
        self.redraw_pending = False

    def compose(self) -> ComposeResult:
        yield VerticalScroll(Static(f"run {self.run_id}: loading…", id="facts-text"), id="facts")
        with Grid(id="charts"):
            for i in range(GRID_CHARTS):
                yield MetricChart(id=f"chart-{i}")
        yield Log(max_lines=LOG_MAX_LINES, auto_scroll=True)
        yield TypedInput(placeholder="search the log (enter: next match, escape: close)")
        yield Footer()

    # --- data from the app -------------------------------------------------------------------

    def show_detail(self, detail: RunDetail) -> None:
        self.query_one("#facts-text", Static).update(facts(detail))
        self.ended = detail.run.status.terminal
        self.update_title()

    def show_points(self, points: list[dict[str, Any]]) -> None:
        self.series = curves(points)
        self.timed = curves(points, wall_time=True)
        self.draw()

    def add_points(self, points: list[tuple[str, int | None, float, int]]) -> None:
        for key, step, value, line in points:
            if value is None:  # NaN or infinite: nothing to draw
                continue
            now = time.time()
            for series, x in (
                (self.series, float(step if step is not None else line)),
                (self.timed, now),
            ):
                curve = series.setdefault(key, [])
                curve.append((x, value))
                if len(curve) > 2 * CHART_POINTS:  # a long live run: keep drawing it cheaply
                    series[key] = thin(curve, CHART_POINTS)
        # A chart frame costs about 0.1 s: live points redraw it at most twice a second.
        if not self.redraw_pending:
            self.redraw_pending = True
            self.set_timer(CHART_REDRAW_S, self.draw)

    def show_log(self, lines: list[str], offset: int) -> None:
        replace_lines(self.query_one(Log), lines)
        self.log_offset = offset
        self.update_title()

    def add_log(self, lines: list[str], end: int) -> None:
        self.log_offset = end
        if not self.following:
            self.held.extend(lines)
            self.update_title()
            return
        self.query_one(Log).write_lines(lines)

    # --- drawing -----------------------------------------------------------------------------

    def draw(self) -> None:
        """The grid: a chart per metric (the first GRID_CHARTS, or half of them where the
        screen is short); or one metric alone."""
        self.redraw_pending = False
        keys = sorted(self.series)
        source = self.timed if self.view.wall_time else self.series
        if self.view.wall_time:  # seconds since the run's first point
            start = min((p[0][0] for p in source.values() if p), default=0.0)
            source = {k: [(x - start, y) for x, y in p] for k, p in source.items()}
        charts = list(self.query(MetricChart))
        alone = 0 <= self.metric_index < len(keys)
        grid = self.query_one("#charts")
        # Two rows of charts on a tall screen; one where two would be too flat to read.
        room = GRID_CHARTS if self.size.height >= TALL_SCREEN else GRID_CHARTS // 2
        shown = [keys[self.metric_index]] if alone else keys[:room]
        grid.set_class(len(shown) <= 1, "single")
        for i, chart in enumerate(charts):
            chart.display = i < max(1, len(shown))
        if not keys:
            charts[0].show({}, "no metrics yet")
            return
        more = f"  (+{len(keys) - room} more: m)" if not alone and len(keys) > room else ""
        for chart, key in zip(charts, shown, strict=False):
            hint = "  (m: next, g: grid)" if alone else more
            chart.show({key: source.get(key, [])}, f"{key}{hint}", self.view)

    def update_title(self) -> None:
        state = "following" if self.following else f"paused, {len(self.held)} new lines held"
        if self.ended and not self.held:
            state = "ended"
        found = f"  ·  match {self.match + 1}/{len(self.matches)}" if self.matches else ""
        self.query_one(Log).border_title = f"log of run {self.run_id}: {state}{found}"

    # --- actions -----------------------------------------------------------------------------

    def on_resize(self) -> None:
        """Taller or shorter, the charts take the rows there is room for."""
        self.draw()

    def action_next_metric(self) -> None:
        """One metric alone, the next each time (after the last: the grid again)."""
        self.metric_index += 1
        if self.metric_index >= len(self.series):
            self.metric_index = -1
        self.draw()

    def action_grid(self) -> None:
        self.metric_index = -1
        self.draw()

    def action_smoothing(self) -> None:
        at = SMOOTHING.index(self.view.smoothing) if self.view.smoothing in SMOOTHING else 0
        self.view.smoothing = SMOOTHING[(at + 1) % len(SMOOTHING)]
        self.draw()

    def action_log_y(self) -> None:
        self.view.log_y = not self.view.log_y
        self.draw()

    def action_wall_time(self) -> None:
        self.view.wall_time = not self.view.wall_time
        self.draw()

    def action_toggle_follow(self) -> None:
        log = self.query_one(Log)
        self.following = not self.following
        log.auto_scroll = self.following
        if self.following and self.held:
            log.write_lines(self.held)
            self.held = []
            log.scroll_end(animate=False)
        self.update_title()

    def action_search(self) -> None:
        box = self.query_one(Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Submitted)
    def search(self, event: Input.Submitted) -> None:
        """Find the text in the log and go to its first match; enter again goes to the next."""
        text = event.value
        log = self.query_one(Log)
        self.matches = [i for i, line in enumerate(log.lines) if text and text in line]
        if text != self.searched:
            self.searched, self.match = text, -1
            highlight_matches(log, text)
        log.focus()  # n and N step through the matches from the log
        self.action_next_match()

    def action_previous_match(self) -> None:
        self.action_next_match(-1)

    def action_next_match(self, step: int = 1) -> None:
        if not self.matches:
            self.update_title()
            return
        self.match = (self.match + step) % len(self.matches)
        log = self.query_one(Log)
        if self.following:
            self.action_toggle_follow()  # looking back: stop jumping to the end
        log.scroll_to(y=self.matches[self.match], animate=False)
        self.update_title()

    def action_back(self) -> None:
        """Close the search box if it is open, else the screen."""
        box = self.query_one(Input)
        if box.has_class("shown"):
            box.remove_class("shown")
            self.query_one(Log).focus()
        else:
            self.app.pop_screen()

    def on_unmount(self) -> None:
        self.app.post_message(self.Closed())


def facts(detail: RunDetail) -> Text:
    """Params, manifest and attempts of a run, as the detail screen's top pane shows them."""
    run, d = detail.run, detail.details
    manifest = d.get("manifest") or {}
    git = manifest.get("git") or {}
    interpreter = manifest.get("interpreter") or {}
    text = Text()
    text.append(f"run {run.id}  {run.name}  ", "bold")
    text.append(f"{run.status}  ", "bold")
    text.append(f"{run.reason or ''}\n", "dim")
    if d.get("aliases"):
        text.append("aliases  ", "bold")
        text.append(" ".join(f"@{a}" for a in d["aliases"]) + "\n", "bold green")
    if run.flag:
        text.append("flag     ", "bold")
        text.append(f"⚑ {run.flag}\n", "bold yellow")
    if run.params:
        text.append("params   ", "bold")
        text.append("  ".join(f"{k}={v}" for k, v in run.params.items()) + "\n")
    commit = (git.get("commit") or "")[:10]
    dirty = " (dirty)" if git.get("dirty") else ""
    text.append("code     ", "bold")
    text.append(
        f"commit {commit or '-'}{dirty}  branch {git.get('branch') or '-'}"
        f"  snapshot {manifest.get('snapshot') or '-'}\n"
    )
    text.append("run      ", "bold")
    text.append(
        f"seed {run.seed}  host {run.host or '-'}  GPU {','.join(map(str, run.gpus)) or '-'}"
        f"  sweep {run.sweep or '-'}  duration {format_duration(run.elapsed())}\n"
    )
    text.append("python   ", "bold")
    text.append(f"{interpreter.get('version') or '-'}  {interpreter.get('executable') or ''}\n")
    text.append("command  ", "bold")
    text.append(f"{manifest.get('command') or ' '.join(run.argv)}\n")
    for a in d.get("attempts", []):
        cls = f" [{a['failure_class']}]" if a.get("failure_class") else ""
        text.append(f"attempt {a['attempt']} on {a['host']}: {a['status']}{cls}  ", "bold")
        text.append(f"{a.get('reason') or ''}\n", "dim")
    return text
