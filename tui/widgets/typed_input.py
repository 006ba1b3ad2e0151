"""A text input whose own keys act in the order they were typed."""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class TypedInput(Input):
    """An Input whose own keys (backspace, arrows, ctrl+u, enter…) act in the order typed.
    Textual runs a focused Input's bindings only once the key has bubbled up to the app, while
    it inserts a character at once, so in a burst (a paste, tmux send-keys) `ctrl+u 3 enter`
    submitted '' (Textual issue #6605). Here the Input's own bindings run as the key arrives."""

    async def _on_key(self, event: events.Key) -> None:
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return
        await super()._on_key(event)
