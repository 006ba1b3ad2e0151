"""Every process on every GPU host, nvitop-style: which process holds how much GPU memory on
which GPU, and which of our runs it belongs to; `k` stops a run of ours."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from engine.model import HostSample, Run
from tui.widgets.footer import Footer


def process_rows(
    samples: dict[str, HostSample], runs: list[Run]
) -> list[tuple[str, int, str, int, float, Run | None]]:
    """(host, GPU index, GPU name, pid, MB, run) for each process on each GPU, the run being
    ours where the process is in a running run's process group on that host; most memory
    first."""
    ours = {(r.host, r.pid): r for r in runs if r.pid}
    rows = []
    for host, sample in sorted(samples.items()):
        for gpu in sample.gpus:
            for p in gpu.processes:
                run = ours.get((host, p.group)) or ours.get((host, p.pid))
                rows.append((host, gpu.index, gpu.name, p.pid, p.mem_mb, run))
    return sorted(rows, key=lambda r: (-r[4], r[0], r[1], r[3]))


class GpuProcessesScreen(Screen[None]):
    """The GPU processes of every host, refreshed with each sample."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "stop_run", "Stop run (SIGTERM)"),
    ]
    CSS = """
    GpuProcessesScreen #gpu-summary { height: auto; padding: 0 1; }
    GpuProcessesScreen DataTable { height: 1fr; }
    """

    class StopWanted(Message):
        """Stop this run of ours (the one holding the GPU memory in the cursor's row)."""

        def __init__(self, run: Run) -> None:
            super().__init__()
            self.run = run

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, int, str, int, float, Run | None]] = []

    def compose(self) -> ComposeResult:
        yield Static("GPU processes: waiting for the first samples…", id="gpu-summary")
        yield DataTable(cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in ("HOST", "GPU", "PID", "GPU MEMORY", "RUN", "NAME"):
            table.add_column(name, key=name)

    def show(self, samples: dict[str, HostSample], runs: list[Run]) -> None:
        """The processes as the latest samples list them; the cursor stays on its process."""
        table = self.query_one(DataTable)
        kept = self.rows[table.cursor_row][3] if self.rows and table.cursor_row >= 0 else None
        self.rows = process_rows(samples, runs)
        gpus = sum(len(s.gpus) for s in samples.values())
        held = sum(r[4] for r in self.rows)
        self.query_one("#gpu-summary", Static).update(
            f"{len(self.rows)} processes on {gpus} GPUs of {len(samples)} hosts, holding"
            f" {held / 1024:.1f} GiB; ours are named (k stops one)"
            if gpus
            else "no host reports a GPU"
        )
        table.clear()
        for host, index, name, pid, mb, run in self.rows:
            table.add_row(
                host,
                f"{index} {name}"[:28],
                str(pid),
                f"{mb / 1024:.2f} GiB",
                Text(str(run.id), "bold") if run else Text("-", "dim"),
                run.name if run else Text("not ours", "dim"),
                key=f"{host}/{index}/{pid}",
            )
        if kept is not None:
            at = next((i for i, row in enumerate(self.rows) if row[3] == kept), 0)
            table.move_cursor(row=at)

    def action_stop_run(self) -> None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0:
            return
        run = self.rows[table.cursor_row][5]
        if run is None:
            self.notify("not a run of ours: only our runs are stopped here", severity="warning")
            return
        self.post_message(self.StopWanted(run))
