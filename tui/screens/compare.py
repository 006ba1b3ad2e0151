"""Runs side by side, with their curves overlaid."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable

from engine.model import Run, format_duration, format_value
from engine.protocol import RunDetail
from engine.results.compare import compare
from tui.widgets.cells import middle_cut
from tui.widgets.footer import Footer
from tui.widgets.metric_chart import MetricChart, curve_color, curves


class CompareScreen(Screen[None]):
    """Runs side by side: the params that differ (marked), final and best metrics, and their
    curves of one metric overlaid."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "next_metric", "Metric"),
        Binding("b", "pin_baseline", "Pin baseline"),
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
        self.baseline: int | None = None  # the run pinned first, the others' Δ taken from
        self.shown: tuple[list[RunDetail], dict[str, str]] | None = None

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
        self.shown = (details, modes)
        self.series = {d.run.id: curves(points.get(d.run.id, [])) for d in details}
        self.keys = sorted({k for s in self.series.values() for k in s})
        self.fill()
        self.draw()
        if self.report_wanted is not None:
            self.want_report(self.report_wanted)

    def fill(self) -> None:
        """The table, the pinned baseline's column first and each other run's Δ from it."""
        assert self.shown is not None
        details, modes = self.shown
        side = compare([d.run for d in details], [d.details for d in details], self.baseline)
        by_id = {d.run.id: d.run for d in details}
        self.runs = [by_id[r["id"]] for r in side["runs"]]
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_column("", key="what")
        for i, run in enumerate(self.runs):  # each run's name in its curve's colour
            pinned = "baseline " if run.id == self.baseline else ""
            label = Text(f"{pinned}{run.id} {middle_cut(run.name, 24)}", f"bold {curve_color(i)}")
            table.add_column(label, key=str(run.id))
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
                    finals.append(f"{format_value(found['last'])} (best {format_value(best)})")
                else:
                    low, high = format_value(found["min"]), format_value(found["max"])
                    finals.append(f"{format_value(found['last'])} ({low}…{high})")
                if found is not None and found.get("delta") is not None:
                    finals[-1] += f" Δ {found['delta']:+.4g}"
            table.add_row(Text(f"  {key} last", "bold"), *finals)
        seeds = [str(run.seed) for run in self.runs]
        mark = "≠ " if len(set(seeds)) > 1 else "  "
        table.add_row(Text(f"{mark}seed", "bold"), *seeds)
        table.add_row(
            Text("  duration", "bold"), *(format_duration(run.elapsed()) for run in self.runs)
        )
        table.add_row(Text("  host", "bold"), *(run.host or "-" for run in self.runs))

    def action_pin_baseline(self) -> None:
        """Pin the run of the cursor's column as the baseline (again: unpin it)."""
        table = self.query_one(DataTable)
        if self.shown is None or table.cursor_column < 1:
            return
        run = self.runs[table.cursor_column - 1]
        self.baseline = None if self.baseline == run.id else run.id
        self.fill()

    def draw(self) -> None:
        if not self.keys:
            self.query_one(MetricChart).show({}, "no metrics")
            return
        key = self.keys[self.metric_index]
        self.query_one(MetricChart).show(
            {f"{run.id} {run.name}": self.series[run.id].get(key, []) for run in self.runs},
            f"{key} of {len(self.runs)} runs, each in its column's colour  (m: next metric)",
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
