"""The TUI under load: the real app driven by Pilot at 160×48 against a real daemon whose store
holds 100,000 runs, while one run prints 10,000 lines per second and its log stays on screen.
Reports the time to the first full screen (goal < 1 s) and, from a key press to the updated
screen (`pilot.press` and `pilot.pause`), the median and 95th percentile for a cursor move, a
sort and a filter; and for a filter whose runs no window showed before, so none is in the
store's memory of ended runs' rows. The peer is the same measure on a bare app that only counts the key press,
in the same run under the same load: Pilot's own cost per key."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Static

from bench.common import engine_in, spread
from engine.model import JobSpec
from tests.conftest import fill_store
from tui.app import RunyardApp
from tui.widgets import HostPane, RunsTable

NOISY = (
    "import sys, time\n"
    "i = 0\n"
    "while True:\n"
    "    start = time.perf_counter()\n"
    "    lines = [f'line {i + k} of a busy run' for k in range(1000)]\n"
    '    lines.append(\'@runyard {"step": %d, "loss": %f}\' % (i, 1 / (i + 1)))\n'
    "    sys.stdout.write('\\n'.join(lines) + '\\n'); sys.stdout.flush()\n"
    "    i += 1000\n"
    "    time.sleep(max(0.0, 0.1 - (time.perf_counter() - start)))\n"
)


QUIET = "import time\nprint('@runyard {\"x\": 1}', flush=True)\ntime.sleep(600)\n"


class BusyLogApp(RunyardApp):
    """The real app, but its log pane stays on the busy run (the app follows the highlighted
    run's log, and the keys measured move the highlight away): every key is then timed while
    10,000 lines a second are being drawn."""

    def __init__(self, config: str, busy: int) -> None:
        super().__init__(config)
        self.busy = busy

    def show_log(self, run_id: int):  # type: ignore[no-untyped-def, override]
        if run_id == self.busy:
            return super().show_log(run_id)
        return None


class FloorApp(App[None]):
    """The least an app can do for a key: count it on screen. Pilot's own cost per press."""

    BINDINGS = [("down", "count", "Count")]

    def compose(self) -> ComposeResult:
        yield Static("0")

    def action_count(self) -> None:
        self.count = getattr(self, "count", 0) + 1
        self.query_one(Static).update(str(self.count))


async def floor_presses(presses: int) -> list[float]:
    app = FloorApp()
    times = []
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        for _ in range(presses):
            start = time.perf_counter()
            await pilot.press("down")
            await pilot.pause()
            times.append(time.perf_counter() - start)
    return times


FRAMES: list[float] = []  # when each compositor refresh (a frame drawn) finished
# Changes awaited on screen: (condition, future), resolved with the end of the first frame
# drawn while its condition holds.
AWAITED: list[tuple[Callable[[], bool], asyncio.Future[float]]] = []


def count_frames() -> None:
    """Record the end of every frame Textual draws: the screen as a user would see it."""
    from textual.screen import Screen

    draw = Screen._compositor_refresh

    def drawn(self: Screen) -> None:
        draw(self)
        now = time.perf_counter()
        FRAMES.append(now)
        for condition, shown in list(AWAITED):
            if condition():
                AWAITED.remove((condition, shown))
                shown.set_result(now)

    Screen._compositor_refresh = drawn  # type: ignore[method-assign]


async def key_to_frame(app: App, key: str, changed: Callable[[], bool]) -> float:
    """From a key arriving as a terminal sends it to the end of the first frame drawn with the
    change it causes: Pilot's own waiting left out."""
    assert app._driver is not None
    shown: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    AWAITED.append((changed, shown))
    start = time.perf_counter()
    app._driver.send_message(events.Key(key, key if len(key) == 1 else None))
    async with asyncio.timeout(30):
        return await shown - start


FILTERS = ("failed", "auc>0.9", "run-0001", "host:local")


def unseen(i: int) -> str:
    """The i-th of filters whose runs no window has shown before (100 runs each, none in the
    window of the filter one character shorter): the store has no row of them in memory."""
    return f"run-0{10 + i:02d}{i % 9}"


async def type_all_but_last(app: RunyardApp, pilot, text: str) -> str:  # type: ignore[no-untyped-def]
    """Open the filter bar and put in all of a filter but its last character."""
    await pilot.press("slash")
    box = app.dash.query_one("#filter")
    shown = app.pages_shown
    box.value = text[:-1]  # type: ignore[attr-defined]
    box.action_end()  # type: ignore[attr-defined]  # as if typed: no selection, cursor at the end
    await until(lambda: app.runs_window.query == text[:-1] and app.pages_shown > shown)
    await pilot.pause()  # that window is on screen before the last character comes
    return text


async def until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the screen did not update")
        await asyncio.sleep(0.001)


async def main(runs: int, presses: int, noise: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        fill_store(root / "runs", runs)
        print(f"store filled with {runs:,} runs in {time.perf_counter() - started:.1f} s")
        config = root / "hosts.toml"
        hosts = '[engine]\nstate_dir = "runs"\n[hosts.local]\nkind = "local"\n'
        async with engine_in(root, hosts) as client:
            script = NOISY if noise else QUIET
            [noisy] = await client.submit(
                [JobSpec(argv=(sys.executable, "-c", script), cwd=str(root), name="noisy")]
            )
            while not await client.metrics(noisy.id):
                await asyncio.sleep(0.05)
            count_frames()
            app = BusyLogApp(str(config), noisy.id)
            opened = time.perf_counter()
            async with app.run_test(size=(160, 48)) as pilot:
                table = app.dash.query_one(RunsTable)
                await until(
                    lambda: (
                        table.row_count > 0
                        and app.log_follow.run == noisy.id
                        and all(p.sample is not None for p in app.dash.query(HostPane))
                    )
                )
                first_screen = time.perf_counter() - opened
                moves, sorts, filters = [], [], []
                direct: dict[str, list[float]] = {
                    "cursor move": [],
                    "sort": [],
                    "filter": [],
                    "filter, unseen": [],
                }
                for _ in range(presses):
                    row = table.window.cursor
                    direct["cursor move"].append(
                        await key_to_frame(
                            app, "down", lambda row=row: table.window.cursor == row + 1
                        )
                    )
                    await pilot.pause()
                for _ in range(presses):
                    shown = app.pages_shown
                    direct["sort"].append(
                        await key_to_frame(app, "s", lambda shown=shown: app.pages_shown > shown)
                    )
                    await pilot.pause()
                for i in range(presses):
                    # the filter applies as it is typed: time the last character of each
                    for name, text in (("filter", FILTERS[i % 4]), ("filter, unseen", unseen(i))):
                        await type_all_but_last(app, pilot, text)
                        shown = app.pages_shown
                        direct[name].append(
                            await key_to_frame(
                                app, text[-1], lambda shown=shown: app.pages_shown > shown
                            )
                        )
                        await pilot.press("enter")
                        await pilot.pause()
                for _ in range(presses):
                    row = table.window.cursor
                    start = time.perf_counter()
                    await pilot.press("down")
                    await until(lambda row=row: table.window.cursor == row + 1)
                    await pilot.pause()
                    moves.append(time.perf_counter() - start)
                for _ in range(presses):
                    shown = app.pages_shown
                    start = time.perf_counter()
                    await pilot.press("s")
                    await until(lambda shown=shown: app.pages_shown > shown)
                    await pilot.pause()
                    sorts.append(time.perf_counter() - start)
                for i in range(presses):
                    text = await type_all_but_last(app, pilot, FILTERS[i % 4])
                    shown = app.pages_shown
                    start = time.perf_counter()
                    await pilot.press(text[-1])
                    await until(lambda shown=shown: app.pages_shown > shown)
                    await pilot.pause()
                    filters.append(time.perf_counter() - start)
                    await pilot.press("enter")
                log_lines = len(app.dash.query_one("#log").lines)  # type: ignore[attr-defined]
                sort = f"{app.runs_window.sort} {'↓' if app.runs_window.descending else '↑'}"
                await pilot.press("q")
            floor = await floor_presses(presses)  # same machine, same load, a bare app
            await client.cancel(noisy.id)
            await client.wait(noisy.id, 30)  # (any run left going is ended by engine_in too)
            printed = len(await client.metrics(noisy.id))
    print(f"with {runs:,} runs in the store and one run printing 10,000 lines/s (followed):")
    print(f"  first full screen  {first_screen * 1000:6.0f} ms   (goal < 1000 ms)")
    print("with Pilot (`press` and `pause`), against the same on a bare app:")
    print(spread("floor", floor) + "   (a bare app counting the key press)")
    print(spread("cursor move", moves))
    print(spread("sort", sorts))
    print(spread("filter", filters))
    print(
        "key arriving → first frame drawn with the change (no Pilot waiting; goal < 50 ms),"
        f" filters sorted by {sort}:"
    )
    for name, times in direct.items():
        print(spread(name, times))
    ratio = statistics.median(moves) / statistics.median(floor)
    print(
        f"  cursor move / floor: {ratio:.2f}×   (busy log lines on screen at the end: {log_lines})"
    )
    print(f"  the busy run's markers stored meanwhile: {printed}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--quiet", action="store_true", help="no busy run: the app alone")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.presses, not args.quiet))
