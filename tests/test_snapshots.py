"""Snapshot tests (pytest-textual-snapshot) of the dashboard, a run's detail and the launcher,
drawn from fixed data; `pytest --snapshot-update` records them after a deliberate change."""

from __future__ import annotations

from .snapshot_apps import DashboardApp, DetailApp, LauncherApp


def test_dashboard(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(DashboardApp(), terminal_size=(160, 40))


def test_run_detail(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(DetailApp(), terminal_size=(160, 48))


def test_launcher(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(LauncherApp(), terminal_size=(120, 30))
