"""A one-line prompt."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from tui.widgets.typed_input import TypedInput


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line (a priority, say); enter answers it, escape answers None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical { width: 60; height: auto; border: thick $primary; background: $surface; padding: 0 1; }
    """

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield TypedInput(value=self.value)

    @on(Input.Submitted)
    def answer(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)
