"""A host's pane on the dashboard: state, CPU, memory and GPUs."""

from __future__ import annotations

import collections

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.model import ClusterSample, HostSample
from engine.protocol import GpuCapacity
from tui.widgets.cells import bar, run_list, since_text, spark
from tui.widgets.lines import Lines

HISTORY = 120  # samples kept for a sparkline


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
        self.since: float | None = None  # when the host went up or unreachable, if known
        self.sample: HostSample | None = None
        self.capacity: tuple[GpuCapacity, ...] = ()  # GPUs as the scheduler counts them
        self.cpu_history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.gpu_history: dict[int, collections.deque[float]] = {}  # utilisation per GPU index
        self.border_title = host

    def compose(self) -> ComposeResult:
        yield Lines(id="host-title")
        yield Lines(id="host-detail")

    def show(
        self,
        state: str,
        reason: str | None,
        sample: HostSample | None,
        capacity: tuple[GpuCapacity, ...] | None = None,
        since: float | None = None,
    ) -> None:
        """Show the host's state (since when, if known) and, if given, a new sample and the
        scheduler's GPU counts."""
        self.state, self.reason, self.since = state, reason, since
        if capacity is not None:
            self.capacity = capacity
        if sample is not None and sample is not self.sample:
            self.record(sample)
        self.query_one("#host-title", Lines).show(self.title_text())
        self.query_one("#host-detail", Lines).show(self.detail_text())

    def record(self, sample: HostSample) -> None:
        """Take a new sample and add its CPU and GPU loads to the sparklines' history."""
        self.sample = sample
        self.cpu_history.append(sample.cpu_percent)
        for g in sample.gpus:
            history = self.gpu_history.setdefault(g.index, collections.deque(maxlen=HISTORY))
            history.append(g.util_percent)

    def title_text(self) -> Text:
        style = {"up": "green", "disabled": "dim"}.get(self.state, "yellow")
        text = Text.assemble((self.host, "bold"), "  ", (self.state, style))
        if self.state == "unreachable" and self.since is not None:
            text.append(f" since {since_text(self.since)}", style)
        if self.reason:
            text.append(f"  {self.reason}", "dim")
        s = self.sample
        if s is not None and s.cluster is not None:
            text.append(f"   CPUs in use {s.cpu_percent:5.1f}% ")
            text.append(spark(list(self.cpu_history), 40), "cyan")
        elif s is not None:
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
        if s.cluster is not None:
            return cluster_text(s.cluster)
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
        holders = {g.index: g.runs for g in self.capacity}
        if not s.gpus and self.capacity:  # declared in hosts.toml: what the engine holds of each
            for g in self.capacity:
                held = g.reserved_mb / max(g.total_mb, 1)
                text.append(
                    f"gpu{g.index} declared {g.total_mb / 1024:.0f} GiB   held {bar(held, 12)} "
                    f"{g.reserved_mb / 1024:5.1f} GiB{run_list(g.runs, ' by runs ')}\n"
                )
        elif not s.gpus:
            text.append(s.gpu_error or "no NVIDIA GPU", "dim")
        for g in s.gpus:
            extra = ""
            if g.temperature_c is not None:
                extra += f" {g.temperature_c:.0f}°C"
            if g.power_w is not None:
                extra += f" {g.power_w:.0f}W"
            util = spark(list(self.gpu_history.get(g.index, [g.util_percent])), 8)
            name = g.name.removeprefix("NVIDIA ")[:16]
            text.append(
                f"gpu{g.index} {name:<16} mem {bar(g.mem_used_mb / max(g.mem_total_mb, 1), 10)} "
                f"{g.mem_used_mb / gib:5.1f}/{g.mem_total_mb / gib:.0f} GiB  "
                f"util {util} {g.util_percent:3.0f}%{extra}"
            )
            text.append(f"{run_list(holders.get(g.index, ()))}\n", "bold")
        return text


def cluster_text(c: ClusterSample) -> Text:
    """A Slurm host's partition: nodes by state, CPUs and GPUs in use, and our jobs."""
    text = Text()
    text.append(f"nodes {c.nodes()}\n")
    text.append(
        f"cpus  {bar(c.cpus_used / max(c.cpus_total, 1), 20)} {c.cpus_used}/{c.cpus_total} in use\n"
    )
    if c.gpus_total:
        text.append(
            f"gpus  {bar(c.gpus_used / c.gpus_total, 20)} {c.gpus_used}/{c.gpus_total} in use\n"
        )
    else:
        text.append("no GPUs in the partition\n", "dim")
    text.append(f"ours  {c.ours()}")
    if c.error:
        text.append(f"\n{c.error}", "yellow")
    return text
