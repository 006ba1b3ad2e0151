"""The runs filter bar."""

from __future__ import annotations

from tui.widgets.typed_input import TypedInput


class FilterBar(TypedInput):
    """The runs filter. Its virtual width is at least the bar's own, so typing a character
    changes no size: an Input's virtual width otherwise follows its text, and Textual lays
    out the whole screen on every keystroke."""

    @property
    def content_width(self) -> int:
        return max(super().content_width, self.scrollable_content_region.width)
