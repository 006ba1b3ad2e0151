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
        self.most = 1

    def show(self, text: Text, most: int = 1) -> None:
        """Show `text`; a line longer than the widget is wide takes the lines it wraps to,
        `most` lines in all."""
        self.text, self.most = text, most
        self._fit()
        self.refresh()

    def _fit(self) -> None:
        lines = self.text.plain.rstrip("\n").split("\n")
        width = max(1, self.size.width)
        wrapped = sum(max(1, -(-cell_len(line) // width)) for line in lines)
        height = max(1, min(wrapped, max(self.most, len(lines))))
        if self.styles.height is None or self.styles.height.value != height:
            self.styles.height = height

    def on_resize(self) -> None:
        """Narrower or wider, long text takes the lines it now wraps to."""
        self._fit()

    def render(self) -> Text:
        return self.text
