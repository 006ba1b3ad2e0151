"""The TUI's log follower as a pure state machine: a tail, then each line once, whatever order
the tail and the streamed events arrive in."""

from __future__ import annotations

from engine.protocol import LogLines
from tui.log_follow import TAIL_BYTES, LogFollow, Read, Show


def lines(start: int, *texts: str, run_id: int = 1, skipped: int = 0) -> LogLines:
    end = start + sum(len(t) + 1 for t in texts)
    return LogLines(
        run_id=run_id, attempt=1, start=start, end=end, lines=list(texts), skipped=skipped
    )


def test_the_tail_then_events_in_order_show_each_line_once() -> None:
    follow = LogFollow()
    follow.start(1)
    assert follow.event(lines(0, "a")) is None  # held: the tail is not in yet
    show, held = follow.tail(b"a\nb\nhal", 7)  # the whole log; "hal" is half a line
    assert show == Show(["a", "b"], 4) and follow.offset == 4
    assert [follow.event(e) for e in held] == [None]  # "a" is in the tail already
    step = follow.event(lines(4, "half"))
    assert step == Show(["half"], 9)
    follow.shown(step)
    assert follow.offset == 9


def test_a_gap_or_skipped_lines_are_read_from_where_the_shown_log_ends() -> None:
    follow = LogFollow()
    follow.start(1)
    follow.tail(b"a\n", 2)
    gap = follow.event(lines(10, "later"))
    assert gap == Read(1, 2, 14, since=2, end=16, clipped=False)
    assert follow.read(gap, b"missing\nlater\n") == Show(["missing", "later"], 16)
    skipped = follow.event(lines(2, "x", skipped=3))
    assert isinstance(skipped, Read) and skipped.start == 2


def test_a_huge_gap_reads_a_tail_s_worth_and_marks_its_cut_line() -> None:
    follow = LogFollow()
    follow.start(1)
    follow.tail(b"", 0)
    far = follow.event(lines(10 * TAIL_BYTES, "end"))
    assert isinstance(far, Read) and far.clipped and far.max_bytes == TAIL_BYTES
    assert follow.read(far, b"ut line\nend\n") == Show(["…", "end"], far.end)


def test_events_of_another_run_or_after_a_switch_are_dropped() -> None:
    follow = LogFollow()
    follow.start(1)
    follow.tail(b"a\n", 2)
    assert follow.event(lines(2, "b", run_id=2)) is None
    gap = follow.event(lines(5, "c"))
    assert isinstance(gap, Read)
    follow.start(2)  # the cursor moved on while the gap was read
    assert follow.read(gap, b"xx\nc\n") is None
