"""Waking the output reader when attempts on this machine print: a one-shot inotify watch on
each followed attempt's folder (Linux), so a quiet run costs nothing between its writes and a
chatty one one event per read, however often it writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class OutputWatch:
    """Watches attempt folders for their output.log changing; `on_change` is called (from the
    event loop) once events are waiting, and `take` names the folders they were in. A folder's
    watch is spent by its first event, whichever file it was for (the wrapper's `pid`, a
    snapshot's `work/`): `take` names the folder all the same, so that it is read and its
    watch is added again before that read."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        from inotify_simple import INotify, flags

        self._mask = flags.MODIFY | flags.CREATE | flags.ONESHOT
        self._overflow = flags.Q_OVERFLOW
        self._inotify = INotify(nonblocking=True)
        self._folders: dict[int, str] = {}  # watch descriptor → attempt folder
        self._watches: dict[str, int] = {}
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._armed = False
        self._arm()

    def add(self, attempt_dir: str) -> bool:
        """Watch an attempt's folder until its next change; False when it cannot be (gone, or
        the watch limit)."""
        try:
            wd = self._inotify.add_watch(attempt_dir, self._mask)
        except OSError:
            return False
        old = self._watches.get(attempt_dir)
        if old is not None and old != wd:
            self._folders.pop(old, None)
        self._folders[wd] = attempt_dir
        self._watches[attempt_dir] = wd
        return True

    def remove(self, attempt_dir: str) -> None:
        wd = self._watches.pop(attempt_dir, None)
        if wd is not None:
            self._folders.pop(wd, None)
            with contextlib.suppress(OSError):  # the folder is gone, and its watch with it
                self._inotify.rm_watch(wd)

    def take(self) -> set[str] | None:
        """The folders that changed since the last call, and so may have printed (None: too
        many events were lost to tell, so any may have), and wait for the next."""
        changed: set[str] = set()
        lost = False
        with contextlib.suppress(BlockingIOError):
            for event in self._inotify.read(timeout=0):
                if event.mask & self._overflow:
                    lost = True
                elif event.wd in self._folders:
                    changed.add(self._folders[event.wd])
        self._arm()
        return None if lost else changed

    def close(self) -> None:
        if self._armed:
            self._loop.remove_reader(self._inotify.fileno())
        self._inotify.close()

    def _arm(self) -> None:
        if not self._armed:
            self._loop.add_reader(self._inotify.fileno(), self._ready)
            self._armed = True

    def _ready(self) -> None:
        # Until `take` reads them, waiting events would call this on every turn of the loop.
        self._loop.remove_reader(self._inotify.fileno())
        self._armed = False
        self._on_change()


def output_watch(on_change: Callable[[], None]) -> OutputWatch | None:
    """An inotify watch where this machine has one, else None (the reader polls)."""
    try:
        return OutputWatch(on_change)
    except (ImportError, OSError):
        return None
