"""The sweep launcher: pick an experiment, preview where its trials go, launch."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, OptionList, Static

from engine.protocol import SweepPlan
from tui.widgets.typed_input import TypedInput


class LauncherScreen(ModalScreen[None]):
    """Pick an experiment file, edit overrides, see the trial count and where they would run,
    and launch with enter."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]
    CSS = """
    LauncherScreen { align: center middle; }
    LauncherScreen > Vertical { width: 90%; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    LauncherScreen OptionList { height: 1fr; }
    LauncherScreen #plan { height: auto; max-height: 8; }
    LauncherScreen #trials { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    LauncherScreen Checkbox { border: none; padding: 0; height: 1; }
    """

    class Choice(Message):
        def __init__(self, file: str, overrides: dict[str, str]) -> None:
            super().__init__()
            self.file, self.overrides = file, overrides

    class Preview(Choice):
        """Plan the chosen sweep without queueing it."""

    class Launch(Choice):
        """Queue the chosen sweep (after its smoke test, when `smoke`)."""

        def __init__(self, file: str, overrides: dict[str, str], smoke: bool = False) -> None:
            super().__init__(file, overrides)
            self.smoke = smoke

    def __init__(self, files: list[Path]) -> None:
        super().__init__()
        self.files = files

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Launch a sweep: choose an experiment (enter launches it)")
            yield OptionList(*(str(f) for f in self.files), id="files")
            yield TypedInput(
                placeholder="overrides, e.g. trials=8 seeds=[0,1] lr=0.01", id="overrides"
            )
            yield Checkbox(
                Text("smoke test first: one short run per model, with the experiment's [smoke]"),
                id="smoke",
            )
            yield Static("", id="plan")
            yield Static("", id="trials")

    def on_mount(self) -> None:
        if not self.files:
            self.query_one("#plan", Static).update("no experiments/*.toml in this project")

    def chosen(self) -> tuple[str, dict[str, str]] | None:
        options = self.query_one(OptionList)
        if options.highlighted is None or not self.files:
            return None
        overrides = {}
        for item in self.query_one("#overrides", Input).value.split():
            key, sep, value = item.partition("=")
            if sep and key:
                overrides[key] = value
        return str(self.files[options.highlighted]), overrides

    @on(OptionList.OptionHighlighted)
    @on(Input.Changed)
    def preview(self) -> None:
        if (choice := self.chosen()) is not None:
            self.post_message(self.Preview(*choice))

    @on(OptionList.OptionSelected)
    @on(Input.Submitted)
    def launch(self) -> None:
        if (choice := self.chosen()) is not None:
            self.post_message(self.Launch(*choice, smoke=self.query_one("#smoke", Checkbox).value))

    def show_plan(self, plan: SweepPlan | None, error: str | None = None) -> None:
        """The trial count and where they go (or why the file or overrides are wrong), the
        estimate per host, the files not committed, then the first trials, a line each."""
        summary, trials = Text(), Text()
        if error:
            summary.append(error, "bold red")
        elif plan is not None:
            summary.append(f"{plan.trials} trials: {plan.where}", "bold")
            if plan.shape:
                summary.append(f"\n{plan.shape}")
            for estimate in plan.estimate:
                summary.append(f"\n{estimate.text()}")
            if plan.uncommitted:
                files = ", ".join(line.strip() for line in plan.uncommitted[:6])
                more = f" +{len(plan.uncommitted) - 6}" if len(plan.uncommitted) > 6 else ""
                summary.append(f"\nuncommitted: {files}{more}", "yellow")
            for job in plan.first[:6]:
                trials.append(f"  {job.name}  {' '.join(job.argv)}\n", "dim")
        self.query_one("#plan", Static).update(summary)
        self.query_one("#trials", Static).update(trials)
