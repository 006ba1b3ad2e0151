"""The queue: each queued run with where it would start or why it waits."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from engine.protocol import QueueEntry


class QueueTable(DataTable):
    """Queued runs in planning order: priority, where each would go or why it waits. The last
    column takes the width the others leave, so a reason is cut only where the screen ends."""

    FIXED = (("id", 6), ("name", 20), ("prio", 4), ("sweep", 12))
    MOST = 200  # rows shown (and asked of the daemon): the first in planning order

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.entries: list[QueueEntry] = []
        self.why_width = 0
        self.set_columns(56)

    def set_columns(self, why_width: int) -> None:
        self.why_width = why_width
        self.clear(columns=True)
        for name, width in (*self.FIXED, ("where / why", why_width)):
            self.add_column(name.upper(), key=name, width=width)

    def on_resize(self, event: events.Resize) -> None:
        # each column is padded by a cell on both sides; leave room for a scrollbar
        used = sum(width + 2 for _, width in self.FIXED) + 2 + self.styles.scrollbar_size_vertical
        why_width = max(30, event.size.width - used)
        if why_width != self.why_width:
            self.set_columns(why_width)
            self.show(self.entries)

    def show(self, entries: list[QueueEntry]) -> None:
        self.entries = entries
        self.clear()
        if not entries:  # said, not left as a bare header
            empty = Text("queue empty: nothing waits to start", "dim")
            self.add_row("", Text("(none)", "dim"), "", "", empty, key="empty")
        for entry in entries[: self.MOST]:
            run = entry.run
            style = "green" if entry.reason.startswith("would start") else "yellow"
            self.add_row(
                str(run.id),
                run.name[:20],
                str(run.priority),
                (run.sweep or "")[:12],
                Text(entry.reason, style),
                key=str(run.id),
            )
