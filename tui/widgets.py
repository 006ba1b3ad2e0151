"""Dashboard widgets. They are given data (attributes down) and never talk to the daemon."""

from __future__ import annotations

import collections

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.model import HostSample, Run, RunStatus, format_duration
from engine.protocol import GpuCapacity

STATUS_STYLE = {
    RunStatus.QUEUED: "dim",
    RunStatus.ASSIGNED: "cyan",
    RunStatus.STARTING: "cyan",
    RunStatus.RUNNING: "bold cyan",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.PRUNED: "magenta",
    RunStatus.LOST: "red",
    RunStatus.UNREACHABLE: "bold yellow",
}
HISTORY = 120  # samples kept for a sparkline


def bar(fraction: float, width: int = 10) -> str:
    """A text bar: `fraction` of `width` cells filled."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


SPARK = "▁▂▃▄▅▆▇█"


def spark(values: list[float], width: int) -> str:
    """The last `width` percentages as a sparkline on a fixed 0-100 scale (Textual's Sparkline
    scales to the data's own min and max, which makes 3% look like a full bar)."""
    shown = values[-width:]
    return "".join(SPARK[min(7, int(max(0.0, v) / 100 * 8))] for v in shown).rjust(width)


class HostPane(Vertical):
    """One host: its state, a CPU sparkline, per-core load, memory, and a line per GPU."""

    DEFAULT_CSS = """
    HostPane { height: auto; border: round $primary; padding: 0 1; }
    """

    def __init__(self, host: str, **kwargs: object) -> None:
        super().__init__(id=f"host-{host}", **kwargs)  # type: ignore[arg-type]
        self.host = host
        self.state = "connecting"
        self.reason: str | None = None
        self.sample: HostSample | None = None
        self.capacity: tuple[GpuCapacity, ...] = ()  # GPUs as the scheduler counts them
        self.cpu_history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.border_title = host

    def compose(self) -> ComposeResult:
        yield Static(id="host-title")
        yield Static(id="host-detail")

    def show(
        self,
        state: str,
        reason: str | None,
        sample: HostSample | None,
        capacity: tuple[GpuCapacity, ...] | None = None,
    ) -> None:
        """Show the host's state and, if given, a new sample and the scheduler's GPU counts."""
        self.state, self.reason = state, reason
        if capacity is not None:
            self.capacity = capacity
        if sample is not None and sample is not self.sample:
            self.sample = sample
            self.cpu_history.append(sample.cpu_percent)
        self.query_one("#host-title", Static).update(self.title_text())
        self.query_one("#host-detail", Static).update(self.detail_text())

    def title_text(self) -> Text:
        style = {"up": "green", "disabled": "dim"}.get(self.state, "yellow")
        text = Text.assemble((self.host, "bold"), "  ", (self.state, style))
        if self.reason:
            text.append(f"  {self.reason}", "dim")
        s = self.sample
        if s is not None:
            text.append(f"   CPU {s.cpu_percent:5.1f}% ")
            text.append(spark(list(self.cpu_history), 40), "cyan")
            text.append(f"  {len(s.cpu_per_core)} cores")
            if s.load_avg:
                text.append(f"   load {s.load_avg[0]:.2f}", "dim")
        return text

    def detail_text(self) -> Text:
        s = self.sample
        if s is None:
            return Text("waiting for the first sample…", "dim")
        text = Text()
        for i, load in enumerate(s.cpu_per_core):
            text.append(f"cpu{i:<2} {bar(load / 100, 8)} {load:3.0f}%   ")
            if i % 4 == 3:
                text.append("\n")
        if not text.plain.endswith("\n"):
            text.append("\n")
        gib = 1024
        text.append(
            f"mem   {bar(s.mem_used_mb / max(s.mem_total_mb, 1), 20)} "
            f"{s.mem_used_mb / gib:.1f}/{s.mem_total_mb / gib:.1f} GiB\n"
        )
        if not s.gpus and self.capacity:  # declared in hosts.toml: what the engine holds of each
            for g in self.capacity:
                held = g.reserved_mb / max(g.total_mb, 1)
                text.append(
                    f"gpu{g.index} declared {g.total_mb / 1024:.0f} GiB   held {bar(held, 12)} "
                    f"{g.reserved_mb / 1024:5.1f} GiB by runs\n"
                )
        elif not s.gpus:
            text.append(s.gpu_error or "no NVIDIA GPU", "dim")
        for g in s.gpus:
            extra = ""
            if g.temperature_c is not None:
                extra += f" {g.temperature_c:.0f}°C"
            if g.power_w is not None:
                extra += f" {g.power_w:.0f}W"
            text.append(
                f"gpu{g.index} {g.name[:22]:<22} mem {bar(g.mem_used_mb / max(g.mem_total_mb, 1), 12)} "
                f"{g.mem_used_mb / gib:5.1f}/{g.mem_total_mb / gib:.0f} GiB  "
                f"util {bar(g.util_percent / 100, 8)} {g.util_percent:3.0f}%{extra}\n"
            )
        return text


class RunsTable(DataTable):
    """The runs, one row each, updated in place so the cursor stays where it is."""

    COLUMNS = {
        "id": 5,
        "name": 18,
        "status": 10,
        "host": 10,
        "exit": 4,
        "time": 7,
        "metrics": 28,
        "reason": 36,
    }

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for column, width in self.COLUMNS.items():
            self.add_column(column.upper(), key=column, width=width)
        self.runs: dict[int, Run] = {}
        self.latest: dict[int, dict[str, float]] = {}

    def upsert(self, run: Run) -> None:
        known = run.id in self.runs
        self.runs[run.id] = run
        cells = self.cells(run)
        if not known:
            self.add_row(*cells, key=str(run.id))
            return
        for column, value in zip(self.COLUMNS, cells, strict=True):
            self.update_cell(str(run.id), column, value)

    def set_metrics(self, run_id: int, values: dict[str, float]) -> None:
        if run_id not in self.runs:
            return
        self.latest.setdefault(run_id, {}).update(values)
        self.update_cell(str(run_id), "metrics", self.metrics_text(run_id))

    def tick(self) -> None:
        """Refresh the durations of running runs."""
        for run in self.runs.values():
            if run.status is RunStatus.RUNNING:
                self.update_cell(str(run.id), "time", self.duration_text(run))

    def metrics_text(self, run_id: int) -> str:
        latest = self.latest.get(run_id, {})
        return "  ".join(f"{k}={v:.4g}" for k, v in list(latest.items())[:3])

    @staticmethod
    def duration_text(run: Run) -> str:
        return format_duration(run.elapsed())

    def cells(self, run: Run) -> tuple[object, ...]:
        return (
            str(run.id),
            run.name[:18],
            Text(str(run.status), STATUS_STYLE.get(run.status, "")),
            run.host or "-",
            "-" if run.exit_code is None else str(run.exit_code),
            self.duration_text(run),
            self.metrics_text(run.id),
            (run.reason or "")[:48],
        )

    @property
    def selected_run(self) -> int | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return int(key) if key is not None else None
