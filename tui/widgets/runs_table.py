"""The runs table: a window onto the runs the daemon filters and sorts."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.model import Run, RunStatus, format_duration
from engine.protocol import RunPage
from tui.widgets.cells import STATUS_STYLE


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
        ("try", "TRY", 3),
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
        self.rows: list[Run] = []  # the loaded window, from `window_offset`
        self.runs: dict[int, Run] = {}
        self.latest: dict[int, dict[str, dict[str, float]]] = {}  # run → key → summary
        self.sweep_metrics: dict[str, dict[str, str]] = {}
        self.selected: set[int] = set()
        self.window_offset = 0
        self.total = 0
        self.cursor_row = 0  # over every matching run, not only the loaded ones
        self.page_size = 120  # rows loaded around the cursor: a few screens' worth
        self.wanted: int | None = None  # the window asked for and not yet shown
        self.base_style = Style()  # the table's own style, resolved once per frame

    # --- data from the app -------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def show_page(self, page: RunPage, reset: bool = False) -> None:
        """Show a new window; the cursor stays on its run where that run is still in it (or
        goes to the first row, with `reset`: a new sort or filter)."""
        keep = None if reset else self.selected_run
        if reset:
            self.cursor_row = 0
        self.window_offset, self.total = page.offset, page.total
        self.wanted = None
        self.sweep_metrics.update(page.sweep_metrics)
        self.latest = {int(k): v for k, v in page.metrics.items()}
        self.rows = list(page.runs)
        self.runs = {run.id: run for run in self.rows}
        ids = [run.id for run in self.rows]
        if keep in self.runs:
            self.cursor_row = page.offset + ids.index(keep)
        self.cursor_row = max(0, min(self.cursor_row, self.total - 1))
        width = sum(w for _, _, w in self.COLUMNS) + len(self.COLUMNS)
        if self.resize(Size(width, self.total + 1)):
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
        if run.id not in self.runs:
            return False
        self.runs[run.id] = run
        at = self.position(run.id)
        self.rows[at] = run
        self.refresh_rows(self.window_offset + at)
        return True

    def position(self, run_id: int) -> int:
        """Where a loaded run is in the window (by id: runs are compared field by field)."""
        return next(i for i, run in enumerate(self.rows) if run.id == run_id)

    def set_metrics(self, run_id: int, values: dict[str, tuple[int | None, float]]) -> None:
        """New latest values (step, value) of a loaded run's metrics."""
        if run_id not in self.runs:
            return
        summaries = self.latest.setdefault(run_id, {})
        for key, (step, value) in values.items():
            s = summaries.setdefault(key, {"count": 0, "min": value, "max": value})
            s["last"], s["step"] = value, step
            s["min"], s["max"] = min(s["min"], value), max(s["max"], value)
        self.refresh_rows(self.window_offset + self.position(run_id))

    def tick(self) -> None:
        """Redraw the running runs' rows, so their durations go on."""
        running = [i for i, run in enumerate(self.rows) if run.status is RunStatus.RUNNING]
        self.refresh_rows(*(self.window_offset + i for i in running))

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
        self.selected.clear()
        self.refresh()

    def toggle_selected(self) -> None:
        run_id = self.selected_run
        if run_id is not None:
            self.selected ^= {run_id}
            self.refresh_rows(self.cursor_row)

    @property
    def selected_run(self) -> int | None:
        run = self.run_at(self.cursor_row)
        return run.id if run else None

    def run_at(self, index: int) -> Run | None:
        i = index - self.window_offset
        return self.rows[i] if 0 <= i < len(self.rows) else None

    # --- moving ------------------------------------------------------------------------------

    def action_move(self, rows: int) -> None:
        self.move_to(self.cursor_row + rows)

    def action_move_to(self, index: int) -> None:
        self.move_to(index if index >= 0 else self.total - 1)

    def move_to(self, index: int) -> None:
        if not self.total:
            return
        was, top = self.cursor_row, self.scroll_offset.y
        self.cursor_row = max(0, min(index, self.total - 1))
        self.scroll_to_cursor()
        if self.scroll_offset.y == top:
            self.refresh_rows(was, self.cursor_row)
        else:
            self.refresh()
        loaded_end = self.window_offset + len(self.rows)
        near_end = self.cursor_row >= loaded_end - self.EDGE and loaded_end < self.total
        near_start = self.cursor_row < self.window_offset + self.EDGE and self.window_offset > 0
        if near_end or near_start:
            offset = max(0, self.cursor_row - self.page_size // 2)
            if offset != self.wanted:
                self.wanted = offset
                self.post_message(self.WindowWanted(offset))
        self.highlight()

    def highlight(self) -> None:
        run_id = self.selected_run
        if run_id is not None:
            self.post_message(self.Highlighted(run_id))

    def scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)  # less the header line
        top = int(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        top = int(new)
        shown = range(top, top + self.scrollable_content_region.height)
        loaded = range(self.window_offset, self.window_offset + len(self.rows))
        if self.total and (
            shown.start not in loaded or min(shown.stop, self.total) - 1 not in loaded
        ):
            offset = max(0, top - self.page_size // 4)
            if offset != self.wanted:
                self.wanted = offset
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
            text = " ".join(h.ljust(w)[:w] for _, h, w in self.COLUMNS)
            return self._strip([Segment(text, style)], scroll_x, width)
        index = int(self.scroll_offset.y) + y - 1
        if index >= self.total:
            return Strip.blank(width, self.base_style)
        run = self.run_at(index)
        if run is None:
            return self._strip([Segment("…", self.base_style)], scroll_x, width)
        segments = self.row_segments(run)
        if index == self.cursor_row:
            cursor = self.get_component_rich_style("runs--cursor")
            segments = [Segment(t, (s or Style()) + cursor) for t, s, _ in segments]
        return self._strip(segments, scroll_x, width)

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

    def metrics_text(self, run_id: int) -> str:
        """The run's sweep metric, last and best; else its first metrics' last values."""
        latest = self.latest.get(run_id, {})
        run = self.runs.get(run_id)
        metric = self.sweep_metrics.get(run.sweep or "") if run else None
        if metric and metric.get("name") in latest:
            s = latest[metric["name"]]
            best = s["max"] if metric.get("mode", "max") == "max" else s["min"]
            return f"{metric['name']}={s['last']:.4g} best {best:.4g}"
        return "  ".join(f"{k}={s['last']:.4g}" for k, s in list(latest.items())[:3])

    def cells(self, run: Run) -> dict[str, str]:
        """The run's text in each column, by column key."""
        mark = "●" if run.id in self.selected else " "
        host = run.host or "-"
        if run.gpus:
            host += ":" + ",".join(map(str, run.gpus))
        return {
            "id": f"{mark}{run.id}",
            "name": run.name,
            "status": str(run.status) + (" (held)" if run.held else ""),
            "metrics": self.metrics_text(run.id),
            "time": format_duration(run.elapsed()),
            "try": str(run.attempt),
            "host": host,
            "sweep": run.sweep or "",
            "params": " ".join(f"{k}={v}" for k, v in run.params.items()),
            "reason": run.reason or "",
        }
