"""What every verb prints with: exit codes, JSON, plain tables and cells, times ago."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.model import format_duration, seconds_of

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


def duration_arg(text: str) -> float:
    """A duration argument ("90", "90s", "15m", "1h30m", "2d") in seconds."""
    seconds = seconds_of(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 1h30m)")
    return seconds


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def ago(t: float | None) -> str:
    return "-" if t is None else format_duration(time.time() - t) + " ago"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Rows under a bold header, drawn by rich: fitted to the terminal (long cells wrap) when
    stdout is one, and one line per row, never wrapped, when it is piped."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in header:
        grid.add_column(Text(name), overflow="fold")
    for row in rows:  # as text: a `[red]` in a run's name or reason is no markup
        grid.add_row(*(Text(str(c)) for c in row))
    console = _console()
    with console.capture() as captured:
        console.print(grid)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def terminal_width() -> int | None:
    """The terminal's width when stdout is one; None when it is piped."""
    import shutil

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _console() -> Any:
    from rich.console import Console

    width = terminal_width()
    # Piped: as wide as any row needs, and no colours or styles in the text.
    return Console(width=width or 100_000, force_terminal=width is not None, no_color=width is None)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
