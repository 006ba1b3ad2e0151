"""The key bar at the bottom of each screen."""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Textual's footer, redrawn only when the keys it shows change. Textual's own redraws its keys
    twice on every focus change, and lays out the whole screen each time. And it leaks: each
    key it drops stays alive, watching the footer's `compact`, until `compact` is set again
    (Textual issue #6666). Setting it after each redraw frees them."""

    drawn_for: tuple[object, ...] | None = None  # the bindings the keys on show were drawn for
    redraws = 0  # times it drew its keys: tests count them

    async def recompose(self) -> None:
        if not self.is_attached:
            return  # its screen closed meanwhile
        shown = tuple(
            (binding, enabled, tooltip)
            for key, (_node, binding, enabled, tooltip) in self.screen.active_bindings.items()
            if binding.show or key == self.app.COMMAND_PALETTE_BINDING
        )
        if shown == self.drawn_for:
            return
        self.drawn_for = shown
        self.redraws += 1
        await super().recompose()
        self.mutate_reactive(TextualFooter.compact)
