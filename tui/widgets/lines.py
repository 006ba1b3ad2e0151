"""Text redrawn in place: its layout is redone only when its number of lines changes."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget


class Lines(Widget):
    """Text that is redrawn in place: the layout is redone only when its number of lines
    changes (a Static re-lays out the whole screen on every update)."""

    DEFAULT_CSS = "Lines { height: 1; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = Text()

    def show(self, text: Text, most: int = 1) -> None:
        """Show `text`; a line longer than the widget is wide takes the lines it wraps to,
        `most` lines in all."""
        self.text = text
        width = max(1, self.size.width)
        wrapped = sum(
            max(1, -(-cell_len(line) // width)) for line in text.plain.rstrip("\n").split("\n")
        )
        height = max(1, min(wrapped, max(most, len(text.plain.rstrip("\n").split("\n")))))
        if self.styles.height is None or self.styles.height.value != height:
            self.styles.height = height
        self.refresh()

    def render(self) -> Text:
        return self.text
