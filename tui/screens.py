"""Screens over the dashboard: a run's detail, the sweep launcher, the compare view and a
one-line prompt. Like the widgets they are given data by the app and ask it for more by
messages; none talks to the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Label, Log, OptionList, Static
from textual_plotext import PlotextPlot

from engine.model import Run, format_duration
from engine.protocol import RunDetail, SweepPlan
from engine.results.compare import compare
from tui.widgets import Footer, TypedInput, replace_lines

LOG_MAX_LINES = 20_000


CHART_POINTS = 2000  # per curve: a chart is at most a few hundred columns of braille
CHART_REDRAW_S = 0.5  # live points redraw a chart at most this often


class MetricChart(PlotextPlot):
    """Metric curves (step on x, one series per metric or per run), of one key or all."""

    def show(self, series: dict[str, list[tuple[float, float]]], title: str) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        plt.xlabel("step")
        for label, points in series.items():
            if points:
                xs, ys = zip(*points, strict=True)
                plt.plot(list(xs), list(ys), label=label[:24], marker="braille")
        self.refresh()


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle: run names of one sweep share
    their start and differ at the end (…-001-s1, …-001-s2)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def curves(points: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """A run's points as one (step, value) series per key; a point without a step is placed
    at its line in the log, as live points are."""
    out: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        step = p["step"] if p["step"] is not None else p["line"]
        out.setdefault(p["key"], []).append((float(step), float(p["value"])))
    return out


def thin(curve: list[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    """About `most` points of a curve, as the daemon thins one for a chart: its ends, and the
    lowest and highest point of each of most/2 stretches, so a spike is never dropped."""
    if len(curve) <= most:
        return curve
    n, stretches = len(curve), max(1, most // 2)
    keep = {0, n - 1}
    for b in range(stretches):
        start, end = b * n // stretches, (b + 1) * n // stretches
        if start < end:
            ys = range(start, end)
            keep.add(min(ys, key=lambda i: curve[i][1]))
            keep.add(max(ys, key=lambda i: curve[i][1]))
    return [curve[i] for i in sorted(keep)]


class RunDetailScreen(Screen[None]):
    """One run: params and manifest, attempts with their failure classes, metric charts, and
    its live log, which can be paused, searched and scrolled back."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("m", "next_metric", "Metric"),
        Binding("f", "toggle_follow", "Follow/pause"),
        Binding("slash", "search", "Search log"),
        Binding("n", "next_match", "Next match", show=False),
    ]
    CSS = """
    RunDetailScreen #facts { height: 12; border: round $primary; padding: 0 1; }
    RunDetailScreen MetricChart { height: 1fr; min-height: 10; }
    RunDetailScreen Log { height: 1fr; min-height: 6; border: round $secondary; }
    RunDetailScreen Input { dock: bottom; display: none; }
    RunDetailScreen Input.shown { display: block; }
    """

    class Closed(Message):
        """The screen is gone: its run's log need not be followed for it any more."""

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.metric_index = -1  # -1: every metric
        self.following = True
        self.held: list[str] = []  # lines that arrived while paused
        self.matches: list[int] = []
        self.match = 0
        self.searched = ""  # the text the matches are of
        self.log_offset = 0
        self.redraw_pending = False

    def compose(self) -> ComposeResult:
        yield VerticalScroll(Static(f"run {self.run_id}: loading…", id="facts-text"), id="facts")
        yield MetricChart()
        yield Log(max_lines=LOG_MAX_LINES, auto_scroll=True)
        yield TypedInput(placeholder="search the log (enter: next match, escape: close)")
        yield Footer()

    # --- data from the app -------------------------------------------------------------------

    def show_detail(self, detail: RunDetail) -> None:
        self.query_one("#facts-text", Static).update(facts(detail))

    def show_points(self, points: list[dict[str, Any]]) -> None:
        self.series = curves(points)
        self.draw()

    def add_points(self, points: list[tuple[str, int | None, float, int]]) -> None:
        for key, step, value, line in points:
            curve = self.series.setdefault(key, [])
            curve.append((float(step if step is not None else line), value))
            if len(curve) > 2 * CHART_POINTS:  # a long live run: keep drawing it cheaply
                self.series[key] = thin(curve, CHART_POINTS)
        # A chart frame costs about 0.1 s: live points redraw it at most twice a second.
        if not self.redraw_pending:
            self.redraw_pending = True
            self.set_timer(CHART_REDRAW_S, self.draw)

    def show_log(self, lines: list[str], offset: int) -> None:
        replace_lines(self.query_one(Log), lines)
        self.log_offset = offset
        self.update_title()

    def add_log(self, lines: list[str], end: int) -> None:
        self.log_offset = end
        if not self.following:
            self.held.extend(lines)
            self.update_title()
            return
        self.query_one(Log).write_lines(lines)

    # --- drawing -----------------------------------------------------------------------------

    def draw(self) -> None:
        self.redraw_pending = False
        keys = sorted(self.series)
        if not keys:
            self.query_one(MetricChart).show({}, "no metrics yet")
            return
        if 0 <= self.metric_index < len(keys):
            key = keys[self.metric_index]
            self.query_one(MetricChart).show({key: self.series[key]}, f"{key}  (m: next)")
        else:
            self.query_one(MetricChart).show(self.series, "every metric  (m: one at a time)")

    def update_title(self) -> None:
        state = "following" if self.following else f"paused, {len(self.held)} new lines held"
        found = f"  ·  match {self.match + 1}/{len(self.matches)}" if self.matches else ""
        self.query_one(Log).border_title = f"log of run {self.run_id}: {state}{found}"

    # --- actions -----------------------------------------------------------------------------

    def action_next_metric(self) -> None:
        self.metric_index += 1
        if self.metric_index >= len(self.series):
            self.metric_index = -1
        self.draw()

    def action_toggle_follow(self) -> None:
        log = self.query_one(Log)
        self.following = not self.following
        log.auto_scroll = self.following
        if self.following and self.held:
            log.write_lines(self.held)
            self.held = []
            log.scroll_end(animate=False)
        self.update_title()

    def action_search(self) -> None:
        box = self.query_one(Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Submitted)
    def search(self, event: Input.Submitted) -> None:
        """Find the text in the log and go to its first match; enter again goes to the next."""
        text = event.value
        lines = self.query_one(Log).lines
        self.matches = [i for i, line in enumerate(lines) if text and text in line]
        if text != self.searched:
            self.searched, self.match = text, -1
        self.action_next_match()

    def action_next_match(self) -> None:
        if not self.matches:
            self.update_title()
            return
        self.match = (self.match + 1) % len(self.matches)
        log = self.query_one(Log)
        if self.following:
            self.action_toggle_follow()  # looking back: stop jumping to the end
        log.scroll_to(y=self.matches[self.match], animate=False)
        self.update_title()

    def action_back(self) -> None:
        """Close the search box if it is open, else the screen."""
        box = self.query_one(Input)
        if box.has_class("shown"):
            box.remove_class("shown")
            self.query_one(Log).focus()
        else:
            self.app.pop_screen()

    def on_unmount(self) -> None:
        self.app.post_message(self.Closed())


def facts(detail: RunDetail) -> Text:
    """Params, manifest and attempts of a run, as the detail screen's top pane shows them."""
    run, d = detail.run, detail.details
    manifest = d.get("manifest") or {}
    git = manifest.get("git") or {}
    interpreter = manifest.get("interpreter") or {}
    text = Text()
    text.append(f"run {run.id}  {run.name}  ", "bold")
    text.append(f"{run.status}  ", "bold")
    text.append(f"{run.reason or ''}\n", "dim")
    if run.params:
        text.append("params   ", "bold")
        text.append("  ".join(f"{k}={v}" for k, v in run.params.items()) + "\n")
    commit = (git.get("commit") or "")[:10]
    dirty = " (dirty)" if git.get("dirty") else ""
    text.append("code     ", "bold")
    text.append(
        f"commit {commit or '-'}{dirty}  branch {git.get('branch') or '-'}"
        f"  snapshot {manifest.get('snapshot') or '-'}\n"
    )
    text.append("run      ", "bold")
    text.append(
        f"seed {run.seed}  host {run.host or '-'}  GPU {','.join(map(str, run.gpus)) or '-'}"
        f"  sweep {run.sweep or '-'}  duration {format_duration(run.elapsed())}\n"
    )
    text.append("python   ", "bold")
    text.append(f"{interpreter.get('version') or '-'}  {interpreter.get('executable') or ''}\n")
    text.append("command  ", "bold")
    text.append(f"{manifest.get('command') or ' '.join(run.argv)}\n")
    for a in d.get("attempts", []):
        cls = f" [{a['failure_class']}]" if a.get("failure_class") else ""
        text.append(f"attempt {a['attempt']} on {a['host']}: {a['status']}{cls}  ", "bold")
        text.append(f"{a.get('reason') or ''}\n", "dim")
    return text


class LauncherScreen(ModalScreen[None]):
    """Pick an experiment file, edit overrides, see the trial count and where they would run,
    and launch with enter."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]
    CSS = """
    LauncherScreen { align: center middle; }
    LauncherScreen > Vertical { width: 90%; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    LauncherScreen OptionList { height: 1fr; }
    LauncherScreen #plan { height: auto; max-height: 6; }
    LauncherScreen #trials { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    class Choice(Message):
        def __init__(self, file: str, overrides: dict[str, str]) -> None:
            super().__init__()
            self.file, self.overrides = file, overrides

    class Preview(Choice):
        """Plan the chosen sweep without queueing it."""

    class Launch(Choice):
        """Queue the chosen sweep."""

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
            self.post_message(self.Launch(*choice))

    def show_plan(self, plan: SweepPlan | None, error: str | None = None) -> None:
        """The trial count and where they go (or why the file or overrides are wrong), then
        the first trials, a line each."""
        summary, trials = Text(), Text()
        if error:
            summary.append(error, "bold red")
        elif plan is not None:
            summary.append(f"{plan.trials} trials: {plan.where}", "bold")
            for job in plan.first[:6]:
                trials.append(f"  {job.name}  {' '.join(job.argv)}\n", "dim")
        self.query_one("#plan", Static).update(summary)
        self.query_one("#trials", Static).update(trials)


class CompareScreen(Screen[None]):
    """Runs side by side: the params that differ (marked), final and best metrics, and their
    curves of one metric overlaid."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "next_metric", "Metric"),
        Binding("e", "export", "Export sweep"),
        Binding("R", "report", "Report sweep"),
    ]
    CSS = """
    CompareScreen DataTable { height: auto; max-height: 50%; }
    CompareScreen MetricChart { height: 1fr; }
    """

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.runs: list[Run] = []  # filled by show() once the daemon has answered
        self.series: dict[int, dict[str, list[tuple[float, float]]]] = {}
        self.keys: list[str] = []
        self.metric_index = 0
        self.report_wanted: bool | None = None  # plots or not, asked for before show()

    def compose(self) -> ComposeResult:
        yield Horizontal(DataTable(id="compare"))
        yield MetricChart()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(MetricChart).show({}, f"loading runs {', '.join(map(str, self.run_ids))}…")

    def show(
        self,
        details: list[RunDetail],
        points: dict[int, list[dict[str, Any]]],
        modes: dict[str, str] | None = None,
    ) -> None:
        """Fill the table (from the runs' stored summaries, as `engine compare` prints them)
        and the chart (their curves); `modes` says which way is best for the metrics the runs'
        sweeps optimise ("max" or "min")."""
        modes = modes or {}
        self.runs = [d.run for d in details]
        side = compare(self.runs, [d.details for d in details])
        self.series = {run.id: curves(points.get(run.id, [])) for run in self.runs}
        self.keys = sorted({k for s in self.series.values() for k in s})
        table = self.query_one(DataTable)
        table.add_column("", key="what")
        for run in self.runs:
            table.add_column(f"{run.id} {middle_cut(run.name, 24)}", key=str(run.id))
        for param in side["params"]:
            differs = param["differs"]
            label = Text(
                ("≠ " if differs else "  ") + param["name"], "bold yellow" if differs else ""
            )
            table.add_row(label, *(str(v) if v is not None else "-" for v in param["values"]))
        for metric in side["metrics"]:
            key, mode = metric["key"], modes.get(metric["key"])
            finals = []
            for found in metric["runs"]:
                if found is None or found["last"] is None:
                    finals.append("-")
                elif mode is not None:
                    best = found["max"] if mode == "max" else found["min"]
                    finals.append(f"{found['last']:.4g} (best {best:.4g})")
                else:
                    finals.append(f"{found['last']:.4g} ({found['min']:.4g}…{found['max']:.4g})")
            table.add_row(Text(f"  {key} last", "bold"), *finals)
        seeds = [str(run.seed) for run in self.runs]
        mark = "≠ " if len(set(seeds)) > 1 else "  "
        table.add_row(Text(f"{mark}seed", "bold"), *seeds)
        table.add_row(
            Text("  duration", "bold"), *(format_duration(run.elapsed()) for run in self.runs)
        )
        table.add_row(Text("  host", "bold"), *(run.host or "-" for run in self.runs))
        self.draw()
        if self.report_wanted is not None:
            self.want_report(self.report_wanted)

    def draw(self) -> None:
        if not self.keys:
            self.query_one(MetricChart).show({}, "no metrics")
            return
        key = self.keys[self.metric_index]
        self.query_one(MetricChart).show(
            {f"{run.id} {run.name}": self.series[run.id].get(key, []) for run in self.runs},
            f"{key} of {len(self.runs)} runs  (m: next metric)",
        )

    def action_next_metric(self) -> None:
        if self.keys:
            self.metric_index = (self.metric_index + 1) % len(self.keys)
            self.draw()

    class ReportWanted(Message):
        """Write the report (or, without plots, the exports) of the compared runs' sweep."""

        def __init__(self, sweeps: set[str | None], plots: bool) -> None:
            super().__init__()
            self.sweeps, self.plots = sweeps, plots

    def action_export(self) -> None:
        self.want_report(plots=False)

    def action_report(self) -> None:
        self.want_report(plots=True)

    def want_report(self, plots: bool) -> None:
        """Ask for the report now, or once the runs have loaded (a key typed right after C)."""
        if not self.runs:
            self.report_wanted = plots
            return
        self.post_message(self.ReportWanted({r.sweep for r in self.runs}, plots=plots))


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
