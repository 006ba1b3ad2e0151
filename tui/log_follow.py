"""Following one run's log without losing or repeating a line: its tail is read first, then
each streamed event adds exactly the bytes after what is shown. Pure: the app does the
reading and the drawing, this says what to read and what to draw."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.protocol import LogLines

TAIL_BYTES = 64 * 1024  # how much of a log is read at once, at most


@dataclass(frozen=True)
class Show:
    """Lines to add to the shown log; the log is then shown up to byte `end`."""

    lines: list[str]
    end: int


@dataclass(frozen=True)
class Read:
    """Bytes to read from the log (a gap or an overlap the event could not fill), then to
    give to `LogFollow.read`."""

    run_id: int
    start: int
    max_bytes: int
    since: int  # where the shown log ended when this was asked for
    end: int
    clipped: bool  # the read starts after `since`: its first line is cut


@dataclass
class LogFollow:
    """The followed run, how far its log is shown (None while its tail is being read), and
    the events that came while it was."""

    run: int | None = None
    offset: int | None = 0
    held: list[LogLines] = field(default_factory=list)

    def start(self, run_id: int) -> None:
        """Follow a run: its tail is read next; its events wait until it is."""
        self.run, self.offset, self.held = run_id, None, []

    def stop(self) -> None:
        """Follow nothing (its log is to be read again from its tail)."""
        self.run = None

    def tail(self, data: bytes, end: int) -> tuple[Show, list[LogLines]]:
        """The tail read (`data`, the last bytes of the log up to byte `end`): what to show of
        it (whole lines only: a half-written last line comes with its event), and the events
        held meanwhile, to be given to `event` in order."""
        whole = data[: data.rfind(b"\n") + 1]
        shown_to = end - (len(data) - len(whole))
        self.offset = shown_to
        held, self.held = self.held, []
        return Show(decode(whole, clipped=end > len(data)), shown_to), held

    def event(self, event: LogLines) -> Show | Read | None:
        """What a streamed event of log lines asks for: lines to show, bytes to read first, or
        nothing (another run's, already shown, or held until the tail is in)."""
        if event.run_id != self.run:
            return None
        if self.offset is None:
            self.held.append(event)
            return None
        if event.end <= self.offset:
            return None
        if event.start == self.offset and not event.skipped:
            return Show(event.lines, event.end)
        start = max(self.offset, event.end - TAIL_BYTES)
        return Read(
            event.run_id, start, event.end - start, self.offset, event.end, start > self.offset
        )

    def read(self, asked: Read, data: bytes) -> Show | None:
        """The bytes a `Read` asked for, to show; None when the log moved on meanwhile (another
        run, or other lines shown)."""
        if self.run != asked.run_id or self.offset != asked.since:
            return None
        return Show(decode(data, asked.clipped), asked.end)

    def shown(self, show: Show) -> None:
        """The lines of `show` are on screen."""
        self.offset = show.end


def decode(data: bytes, clipped: bool) -> list[str]:
    """Log bytes as lines; a first line cut by where the read began shows as "…"."""
    lines = data.decode("utf-8", "replace").splitlines()
    if clipped and lines:
        lines[0] = "…"
    return lines
