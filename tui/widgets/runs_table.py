"""The runs table: a window onto the runs the daemon filters and sorts."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.model import Run, format_duration, format_value
from engine.protocol import RunPage
from tui.runs_window import RunsWindow
from tui.widgets.cells import STATUS_STYLE
from tui.widgets.filter_bar import FILTER_HELP


class RunsTable(ScrollView, can_focus=True):
    """A window onto the runs the daemon filters and sorts. The scrollbar spans every matching
    run, but only a window of rows around the cursor is loaded, and only the lines on screen
    are drawn (Textual's line API: a DataTable measures and renders every row it holds). Near
    either edge of the window the table asks for another one; the app fetches it."""

    # What a glance needs first, so a 100-column terminal still shows the metric and duration.
    COLUMNS = (
        ("id", "ID", 7),
        ("name", "NAME", 20),
        ("status", "STATUS", 13),
        ("metrics", "METRIC", 26),
        ("time", "TIME", 7),
        ("try", "TRY", 5),
        ("host", "HOST", 10),
        ("sweep", "SWEEP", 12),
        ("params", "PARAMS", 24),
        ("reason", "REASON", 60),
    )
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "move(-20)", "Page up", show=False),
        Binding("pagedown", "move(20)", "Page down", show=False),
        Binding("home", "move_to(0)", "First", show=False),
        Binding("end", "move_to(-1)", "Last", show=False),
    ]
    DEFAULT_CSS = """
    RunsTable { background: $surface; overflow-y: scroll; }
    RunsTable > .runs--header { text-style: bold; background: $boost; }
    RunsTable > .runs--cursor { background: $accent 40%; }
    RunsTable:focus > .runs--cursor { background: $accent; }
    """
    COMPONENT_CLASSES = {"runs--header", "runs--cursor"}
    METRIC_WIDTH = next(w for key, _, w in COLUMNS if key == "metrics")
    HELP = FILTER_HELP
    EDGE = 5  # rows from a window's edge at which the next window is fetched

    class Highlighted(Message):
        """The cursor rests on a run."""

        def __init__(self, run_id: int) -> None:
            super().__init__()
            self.run_id = run_id

    class WindowWanted(Message):
        """The cursor is near or past an edge of the loaded rows: load the window from `offset`."""

        def __init__(self, offset: int) -> None:
            super().__init__()
            self.offset = offset

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = RunsWindow()  # what the table shows: the app fills it
        self.base_style = Style()  # the table's own style, resolved once per frame

    # --- data from the app -------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.window.rows)

    def show_page(self, page: RunPage, reset: bool = False) -> None:
        """Show a new window of runs (see RunsWindow.load) and keep the cursor in view."""
        self.window.load(page, reset)
        width = sum(w for _, _, w in self.COLUMNS) + len(self.COLUMNS)
        if self.resize(Size(width, self.window.total + 1)):
            self.call_after_refresh(self.scroll_to_cursor)  # once the new height is laid out
        else:
            self.scroll_to_cursor()
        self.refresh()
        self.highlight()

    def resize(self, size: Size) -> bool:
        """Take a new row count; True when that needs a layout of the screen first. Textual
        lays out the whole screen on every change of a virtual size, but a table whose
        scrollbar is always shown (overflow-y: scroll) only needs the scrollbar redrawn,
        which keeps the frame after a sort or filter cheap."""
        if size == self.virtual_size:
            return False
        if self.styles.overflow_y != "scroll" or not self.show_vertical_scrollbar:
            self.virtual_size = size  # the scrollbar may come or go: lay out
            return True
        self.set_reactive(RunsTable.virtual_size, size)
        self._scroll_update(size)  # Textual's own scrollbar update, without the layout
        return False

    def upsert(self, run: Run) -> bool:
        """Update a loaded run's row; False when the run is not in the window."""
        index = self.window.upsert(run)
        if index is not None:
            self.refresh_rows(index)
        return index is not None

    def set_metrics(self, run_id: int, values: dict[str, tuple[int | None, float]]) -> None:
        """New latest values (step, value) of a loaded run's metrics."""
        index = self.window.set_metrics(run_id, values)
        if index is not None:
            self.refresh_rows(index)

    def tick(self) -> None:
        """Redraw the running runs' rows, so their durations go on."""
        self.refresh_rows(*self.window.running())

    def refresh_rows(self, *indexes: int) -> None:
        """Redraw only these rows' lines, where they are on screen: a live update or a cursor
        move redraws one line, not the whole table, however busy the runs."""
        top = int(self.scroll_offset.y)
        region = self.scrollable_content_region
        for index in indexes:
            y = index - top + 1  # below the header line
            if 1 <= y < region.height:
                self.refresh(Region(0, y, region.width, 1))

    def clear_selection(self) -> None:
        self.window.selected.clear()
        self.refresh()

    def toggle_selected(self) -> None:
        if self.window.toggle():
            self.refresh_rows(self.window.cursor)

    # --- moving ------------------------------------------------------------------------------

    def action_move(self, rows: int) -> None:
        self.move_to(self.window.cursor + rows)

    def action_move_to(self, index: int) -> None:
        self.move_to(index if index >= 0 else self.window.total - 1)

    def move_to(self, index: int) -> None:
        if not self.window.total:
            return
        was, top = self.window.cursor, self.scroll_offset.y
        self.window.cursor = max(0, min(index, self.window.total - 1))
        self.scroll_to_cursor()
        if self.scroll_offset.y == top:
            self.refresh_rows(was, self.window.cursor)
        else:
            self.refresh()
        loaded_end = self.window.offset + len(self.window.rows)
        near_end = self.window.cursor >= loaded_end - self.EDGE and loaded_end < self.window.total
        near_start = self.window.cursor < self.window.offset + self.EDGE and self.window.offset > 0
        if near_end or near_start:
            offset = self.window.window_for(self.window.cursor, 2)
            if offset is not None:
                self.post_message(self.WindowWanted(offset))
        self.highlight()

    def highlight(self) -> None:
        run_id = self.window.cursor_run
        if run_id is not None:
            self.post_message(self.Highlighted(run_id))

    def scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)  # less the header line
        top = int(self.scroll_offset.y)
        if self.window.cursor < top:
            self.scroll_to(y=self.window.cursor, animate=False)
        elif self.window.cursor >= top + visible:
            self.scroll_to(y=self.window.cursor - visible + 1, animate=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        top = int(new)
        shown = range(top, top + self.scrollable_content_region.height)
        loaded = range(self.window.offset, self.window.offset + len(self.window.rows))
        if self.window.total and (
            shown.start not in loaded or min(shown.stop, self.window.total) - 1 not in loaded
        ):
            offset = self.window.window_for(top, 4)
            if offset is not None:
                self.post_message(self.WindowWanted(offset))

    def on_resize(self) -> None:
        """Shorter (the queue above grew), the table keeps the cursor's row in view."""
        self.scroll_to_cursor()

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.move_to(int(self.scroll_offset.y) + event.y - 1)

    # --- drawing -----------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # Styles are resolved once per frame: Textual's rich_style walks every ancestor on
        # each call, which was half the cost of drawing a line.
        self.base_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = int(self.scroll_offset.x)
        if y == 0:
            style = self.get_component_rich_style("runs--header")
            return self._strip([Segment(self.header_text(), style)], scroll_x, width)
        index = int(self.scroll_offset.y) + y - 1
        if index >= self.window.total:
            return Strip.blank(width, self.base_style)
        run = self.window.run_at(index)
        if run is None:
            return self._strip([Segment("…", self.base_style)], scroll_x, width)
        segments = self.row_segments(run)
        if index == self.window.cursor:
            cursor = self.get_component_rich_style("runs--cursor")
            segments = [Segment(t, (s or Style()) + cursor) for t, s, _ in segments]
        return self._strip(segments, scroll_x, width)

    def header_text(self) -> str:
        """The column titles, each with its number key (1-0); the sorted one marked ▼/▲."""
        sorted_by = self.window.sorted_column()
        titles = []
        for i, (key, title, width) in enumerate(self.COLUMNS):
            if key == "metrics" and self.window.metric_choice:  # chosen with M
                title += f" {self.window.metric_choice}"
            if key == sorted_by:
                title += " ▼" if self.window.descending else " ▲"
            titles.append(f"{(i + 1) % 10}:{title}".ljust(width)[:width])
        return " ".join(titles)

    def _strip(self, segments: list[Segment], scroll_x: int, width: int) -> Strip:
        line = Strip(segments).crop(scroll_x, scroll_x + width)
        return line.extend_cell_length(width, self.base_style)

    def row_segments(self, run: Run) -> list[Segment]:
        base = self.base_style
        cells = self.cells(run)
        out: list[Segment] = []
        for key, _, width in self.COLUMNS:
            text = cells[key][:width].ljust(width) + " "
            style = base
            if key == "status":
                style = base + Style.parse(STATUS_STYLE.get(run.status, "") or "none")
            if out and out[-1].style == style:  # fewer segments: cheaper to crop and pad
                out[-1] = Segment(out[-1].text + text, style)
            else:
                out.append(Segment(text, style))
        return out

    def metric_tokens(self, run_id: int) -> list[str]:
        """The run's metrics as whole `key=value` tokens: its sweep's metric first, with the
        best it reached (`↑0.95` for a metric to maximise), then the others' last values."""
        latest = self.window.latest.get(run_id, {})
        run = self.window.runs.get(run_id)
        metric = self.window.sweep_metrics.get(run.sweep or "") if run else None
        first = self.window.metric_choice or (metric.get("name") if metric else None)
        tokens = []
        if first in latest:
            s = latest[first]
            if metric and metric.get("name") == first:  # the sweep's: its best, that way
                up = metric.get("mode", "max") == "max"
                best = s["max"] if up else s["min"]
                arrow = "↑" if up else "↓"
                tokens.append(f"{first}={format_value(s['last'])} {arrow}{format_value(best)}")
            else:
                tokens.append(f"{first}={format_value(s['last'])}")
        tokens += [f"{k}={format_value(s['last'])}" for k, s in latest.items() if k != first]
        return tokens

    def metrics_text(self, run_id: int) -> str:
        """As many whole metric tokens as the METRIC column holds (never one cut in two), and
        `…` where more did not fit."""
        return fit_tokens(self.metric_tokens(run_id), self.METRIC_WIDTH)

    def cursor_line(self) -> Text:
        """The cursor's run in full: its name, status, every metric, and why it is as it is
        (what a column cuts short)."""
        run = self.window.runs.get(self.window.cursor_run or -1)
        if run is None:
            return Text("")
        line = Text()
        aliases = "".join(f"@{a} " for a in self.window.aliases.get(run.id, ()))
        line.append(f"{run.id} {aliases}{run.name}  ", "bold")
        line.append(str(run.status), STATUS_STYLE.get(run.status, "") or "")
        if tokens := self.metric_tokens(run.id):
            line.append("  " + "  ".join(tokens))
        if run.flag:
            line.append(f"  ⚑ {run.flag}", "bold yellow")
        if run.reason:
            line.append(f"  {run.reason}", "dim")
        return line

    def cells(self, run: Run) -> dict[str, str]:
        """The run's text in each column, by column key."""
        mark = "●" if run.id in self.window.selected else " "
        host = run.host or "-"
        if run.gpus:
            host += ":" + ",".join(map(str, run.gpus))
        aliases = "".join(f"@{a} " for a in self.window.aliases.get(run.id, ()))
        return {
            "id": f"{mark}{run.id}",
            "name": aliases + run.name,
            "status": str(run.status)
            + (" (held)" if run.held else "")
            + (" ⚑" if run.flag else ""),
            "metrics": self.metrics_text(run.id),
            "time": format_duration(run.elapsed()),
            "try": str(run.attempt),
            "host": host,
            "sweep": run.sweep or "",
            "params": " ".join(f"{k}={v}" for k, v in run.params.items()),
            "reason": f"⚑ {run.flag}" if run.flag else run.reason or "",
        }


def fit_tokens(tokens: list[str], width: int) -> str:
    """Whole tokens, two spaces apart, as many as fit in `width`; `…` where some were left
    out (a first token longer than the width is the one thing cut)."""
    shown = ""
    for i, token in enumerate(tokens):
        joined = f"{shown}  {token}" if shown else token
        rest = i < len(tokens) - 1
        if len(joined) + (3 if rest else 0) > width:
            return (shown + "  …") if shown else token[: width - 1] + "…"
        shown = joined
    return shown
