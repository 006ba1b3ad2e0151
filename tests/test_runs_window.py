"""The runs table's data as a pure model: the cursor keeps its run across windows, updates
reach only loaded runs, and windows are asked for once."""

from __future__ import annotations

from engine.model import Run, RunStatus
from engine.protocol import RunPage
from tui.runs_window import RunsWindow


def run(run_id: int, status: RunStatus = RunStatus.SUCCEEDED) -> Run:
    return Run(id=run_id, name=f"r{run_id}", status=status, argv=("x",), cwd="/", seed=0,
               capture=(), created_at=0.0)  # fmt: skip


def page(offset: int, ids: range, total: int) -> RunPage:
    runs = [run(i) for i in ids]
    return RunPage(total=total, offset=offset, runs=runs, metrics={}, sweep_metrics={})


def test_the_cursor_stays_on_its_run_when_a_new_window_holds_it() -> None:
    window = RunsWindow()
    window.load(page(0, range(100, 90, -1), total=50))
    window.cursor = 3  # run 97
    window.load(page(2, range(98, 88, -1), total=50))  # two runs arrived above it
    assert window.cursor == 2 + 1 and window.cursor_run == 97
    window.load(page(0, range(10), total=10), reset=True)
    assert window.cursor == 0


def test_updates_reach_loaded_runs_only_and_say_which_row() -> None:
    window = RunsWindow()
    window.load(page(40, range(5), total=100))
    assert window.upsert(run(3, RunStatus.FAILED)) == 43
    assert window.runs[3].status is RunStatus.FAILED and window.rows[3].status is RunStatus.FAILED
    assert window.upsert(run(99)) is None
    assert window.set_metrics(2, {"loss": (5, 0.3)}) == 42
    assert window.set_metrics(2, {"loss": (6, 0.1)}) == 42
    assert window.latest[2]["loss"] == {"count": 0, "last": 0.1, "step": 6, "min": 0.1, "max": 0.3}
    assert window.set_metrics(99, {"loss": (1, 1.0)}) is None


def test_a_window_is_asked_for_once_and_targets_are_the_selection_or_the_cursor() -> None:
    window = RunsWindow(page_size=100)
    window.load(page(0, range(100), total=1000))
    assert window.window_for(95, 2) == 45 and window.window_for(95, 2) is None
    window.cursor = 7
    assert window.targets() == [7]
    assert window.toggle() and window.targets() == [7]
    window.cursor = 2
    window.toggle()
    assert window.targets() == [2, 7]


def test_metric_cells_hold_whole_values_and_columns_sort_by_number() -> None:
    from tui.runs_window import RunsWindow
    from tui.widgets.runs_table import fit_tokens

    tokens = ["val_loss=0.1234", "val_auc=0.9876", "train_loss=0.05"]
    assert fit_tokens(tokens, 26) == "val_loss=0.1234  …"  # never `val_auc=0.` cut mid-token
    assert fit_tokens(tokens, 100) == "val_loss=0.1234  val_auc=0.9876  train_loss=0.05"
    assert fit_tokens(["a_very_long_metric_name=1"], 10) == "a_very_lo…"
    window = RunsWindow()
    assert window.sort_by_column("time") and (window.sort, window.descending) == ("duration", True)
    assert window.sort_by_column("time") and not window.descending  # again: the other way
    assert window.sorted_column() == "time"
    assert not window.sort_by_column("params")  # params do not sort
    window.sweep_metrics = {"s": {"name": "auc", "mode": "max"}}
    assert window.sort_by_column("metrics") and window.sort == "metric:auc"
    assert window.sorted_column() == "metrics"


def test_the_metric_column_shows_each_metric_first_in_turn() -> None:
    from tui.runs_window import RunsWindow

    window = RunsWindow(sort="metric:auc")
    window.sweep_metrics = {"s": {"name": "auc", "mode": "max"}}
    window.latest = {1: {"auc": {}, "loss": {}, "acc": {}}}
    assert window.metric_shown() == "auc"
    assert window.next_metric_column() == "acc" and window.sort == "metric:acc"
    assert window.next_metric_column() == "loss" and window.metric_shown() == "loss"
    assert window.next_metric_column() is None and window.metric_shown() == "auc"
    assert window.sort == "metric:auc"
