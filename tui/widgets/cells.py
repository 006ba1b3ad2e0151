"""Text pieces the widgets and screens draw with: status styles, bars, sparklines, times, cut names."""

from __future__ import annotations

import time

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

from engine.model import RunStatus, sparkline

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


def bar(fraction: float, width: int = 10) -> str:
    """A text bar: `fraction` of `width` cells filled."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def spark(values: list[float], width: int) -> str:
    """The last `width` percentages as a sparkline on a fixed 0-100 scale (Textual's Sparkline
    scales to the data's own min and max, which makes 3% look like a full bar)."""
    return sparkline(values[-width:], 100.0).rjust(width)


def since_text(when: float) -> str:
    """A moment as a clock time, with the date when it was not today."""
    moment, today = time.localtime(when), time.localtime()
    same_day = moment[:3] == today[:3]
    return time.strftime("%H:%M:%S" if same_day else "%b %d %H:%M", moment)


def run_list(runs: tuple[int, ...], lead: str = "  runs ", shown: int = 4) -> str:
    """The ids of the runs holding a GPU after `lead` (`  runs 12 15 +3`), or nothing."""
    if not runs:
        return ""
    more = f" +{len(runs) - shown}" if len(runs) > shown else ""
    return lead + " ".join(str(r) for r in runs[:shown]) + more


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle: run names of one sweep share
    their start and differ at the end (…-001-s1, …-001-s2)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def replace_lines(log: Log, lines: list[str]) -> None:
    """Show `lines` in place of a log's own, its view at their end so that it follows what is
    written next. A cleared Textual Log keeps its scroll offset, and a Log follows writes only
    from a view at its end: without the scroll home, a log shown after a shorter one stayed
    where the shorter one had ended."""
    log.clear()
    log.scroll_home(animate=False, immediate=True)
    log.write_lines(lines)


class MatchHighlighter(Highlighter):
    """Marks every occurrence of a searched text in a log line."""

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def highlight(self, text: Text) -> None:
        if not self.needle:
            return
        plain, at = text.plain, 0
        while (at := plain.find(self.needle, at)) >= 0:
            text.stylize("bold black on yellow", at, at + len(self.needle))
            at += len(self.needle)


def highlight_matches(log: Log, needle: str) -> None:
    """Show `needle` marked wherever it is in the log's lines (nothing marked for "")."""
    log.highlighter = MatchHighlighter(needle)
    log.highlight = bool(needle)
    log.notify_style_update()  # drops the lines drawn before: drawn again, marked
    log.refresh()
