"""A yes/no question before an action on several or running runs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label


class ConfirmScreen(ModalScreen[bool]):
    """Ask yes or no before an action that reaches further than the cursor's run."""

    BINDINGS = [
        Binding("y", "dismiss(True)", "Yes"),
        Binding("enter", "dismiss(True)", "Yes", show=False),
        Binding("n", "dismiss(False)", "No"),
        Binding("escape", "dismiss(False)", "No", show=False),
    ]
    CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 80; height: auto; border: thick $warning; background: $surface; padding: 0 1; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Label("y: yes   n or esc: no")
