"""Apps for snapshot tests: the dashboard's widgets, a run's detail and the launcher, given
fixed data (widgets are handed data and never talk to the daemon), so every pixel is fixed."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.widgets import Footer, Header, Log

from engine.model import GpuSample, HostSample, JobSpec, Run, RunStatus
from engine.protocol import GpuCapacity, HostEstimate, QueueEntry, RunDetail, RunPage, SweepPlan
from tui.screens import LauncherScreen, RunDetailScreen
from tui.widgets import HostPane, QueueTable, RunsTable

T0 = 4_000_000_000.0  # in the future: a run still going shows 0.0s, whatever the clock says


def run(i: int, status: RunStatus, **kw: object) -> Run:
    fields: dict = {
        "id": i,
        "name": f"xgb-digits-{i:03d}-s0",
        "status": status,
        "argv": ("python", "train.py"),
        "cwd": "/p",
        "seed": 0,
        "capture": (),
        "created_at": T0,
        "host": "gpu-box" if i % 2 else "laptop",
        "attempt": 1,
        "started_at": T0,
        "ended_at": T0 + 61 * i,
        "sweep": "xgb-digits-1",
        "params": {"max_depth": 3 + i % 3, "eta": 0.1},
        "reason": "exit code 0",
    }
    fields.update(kw)
    return Run(**fields)


RUNS = [
    run(6, RunStatus.QUEUED, host=None, started_at=None, ended_at=None, attempt=0, reason=None),
    run(5, RunStatus.FAILED, reason="exit code 3: bad config value", exit_code=3),
    run(4, RunStatus.PRUNED, reason="pruned by asha at step 3: val_auc = 0.81"),
    run(
        3, RunStatus.UNREACHABLE, reason="host gpu-box unreachable: connection lost", ended_at=None
    ),
    run(2, RunStatus.SUCCEEDED, gpus=(0,)),
    run(1, RunStatus.SUCCEEDED, gpus=(1,)),
]
METRICS = {
    r.id: {
        "val_auc": {
            "count": 10,
            "last": 0.9 + r.id / 100,
            "step": 9,
            "min": 0.5,
            "max": 0.95 + r.id / 200,
        }
    }
    for r in RUNS[1:]
}
SAMPLE = HostSample(
    host="gpu-box",
    time=T0,
    cpu_percent=37.5,
    cpu_per_core=(12.0, 88.0, 40.0, 10.0),
    mem_used_mb=21_000,
    mem_total_mb=64_000,
    load_avg=(1.5, 1.2, 1.0),
    gpus=(
        GpuSample(0, "NVIDIA H100 80GB HBM3", 40_960, 81_559, 93.0, 61.0, 412.0),
        GpuSample(1, "NVIDIA H100 80GB HBM3", 2_048, 81_559, 0.0, 33.0, 71.0),
    ),
)


class DashboardApp(App[None]):
    CSS = "#hosts { height: auto; } QueueTable { height: auto; max-height: 5; } RunsTable { height: 1fr; border: round $primary; } Log { height: 6; border: round $secondary; }"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Vertical(HostPane("gpu-box"), id="hosts")
        yield QueueTable()
        yield RunsTable()
        yield Log()
        yield Footer()

    def on_mount(self) -> None:
        pane = self.query_one(HostPane)
        capacity = (GpuCapacity(0, 81_559, 40_599, 8192, (3,)), GpuCapacity(1, 81_559, 79_511, 0))
        for value in (10.0, 30.0, 60.0, 37.5):
            pane.show("up", None, HostSample(**{**_fields(SAMPLE), "cpu_percent": value}), capacity)
        self.query_one(QueueTable).show([QueueEntry(RUNS[0], "waits: gpu-box: all 4 slots busy")])
        table = self.query_one(RunsTable)
        table.show_page(
            RunPage(
                total=6,
                offset=0,
                runs=RUNS,
                metrics=METRICS,
                sweep_metrics={"xgb-digits-1": {"name": "val_auc", "mode": "max"}},
            )
        )
        table.focus()
        self.query_one(Log).write_lines([f"[{i}]\teval-auc:0.9{i}" for i in range(8)])


def _fields(sample: HostSample) -> dict:
    return {f: getattr(sample, f) for f in sample.__struct_fields__}


class DetailApp(App[None]):
    async def on_mount(self) -> None:
        screen = RunDetailScreen(2)
        await self.push_screen(screen)
        detail = RunDetail(
            run=RUNS[4],
            details={
                "manifest": {
                    "git": {"commit": "b4e6171dc4f0", "branch": "main", "dirty": True},
                    "snapshot": "35a90fe096b9c03d",
                    "interpreter": {"version": "3.11.7", "executable": "/p/.venv/bin/python"},
                    "command": "python train.py --max-depth 5 --eta 0.1 --seed 0",
                },
                "attempts": [
                    {
                        "attempt": 1,
                        "host": "gpu-box",
                        "status": "failed",
                        "failure_class": "oom",
                        "reason": "CUDA out of memory (exit code 1)",
                    },
                    {
                        "attempt": 2,
                        "host": "gpu-box",
                        "status": "succeeded",
                        "reason": "exit code 0",
                    },
                ],
            },
        )
        screen.show_detail(detail)
        points = [
            {"key": key, "step": s, "value": value(s)}
            for s in range(30)
            for key, value in (
                ("val_auc", lambda s: 1 - 0.4 / (s + 1)),
                ("loss", lambda s: 1 / (s + 1)),
            )
        ]
        screen.show_points(points)
        screen.show_log([f"[{s}]\teval-auc:{1 - 0.4 / (s + 1):.4f}" for s in range(30)], 900)


class LauncherApp(App[None]):
    async def on_mount(self) -> None:
        screen = LauncherScreen(
            [Path("experiments/ensemble.toml"), Path("experiments/xgb_digits.toml")]
        )
        await self.push_screen(screen)
        jobs = [
            JobSpec(
                argv=("python", "train.py", "--C", str(c), "--seed", str(s)),
                cwd="/p",
                name=f"ensemble-glm-{i:03d}-s{s}",
            )
            for i, c in enumerate((0.1, 1.0))
            for s in range(3)
        ]
        screen.show_plan(
            SweepPlan(
                sweep=None,
                trials=24,
                first=jobs,
                where="12 → laptop, 12 → gpu-box (xgb: gpu-box (route: preferred hosts); mlp: gpu-box (route: preferred hosts))",
                runs=[],
                uncommitted=[" M experiments/trainers/common.py", "?? notes.md"],
                estimate=[
                    HostEstimate("laptop", 12, 2, 12, 1296.0, 648.0),
                    HostEstimate("gpu-box", 12, 4, 0),
                ],
            )
        )
