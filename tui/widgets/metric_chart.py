"""Metric curves as a braille chart, and the points behind one: grouped by key, thinned to a chart's width."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from textual_plotext import PlotextPlot

CHART_POINTS = 2000  # per curve: a chart is at most a few hundred columns of braille


CHART_REDRAW_S = 0.5  # live points redraw a chart at most this often


# Several curves' colours, in order: named alike by plotext and rich, so a table can say which
# curve is whose in place of a legend drawn over the curves.
CURVE_COLORS = ("cyan", "magenta", "yellow", "green", "red", "blue")
SMOOTHING = (0.0, 0.6, 0.9)


def curve_color(index: int) -> str:
    """The colour of the `index`th of several curves (see CURVE_COLORS)."""
    return CURVE_COLORS[index % len(CURVE_COLORS)]  # the EMA weights `e` cycles through (0: none)


@dataclass
class ChartView:
    """How curves are drawn: EMA smoothing (TensorBoard's weight), a log y-axis, and x as
    the step or as wall time."""

    smoothing: float = 0.0
    log_y: bool = False
    wall_time: bool = False

    def describe(self) -> str:
        parts = [f"EMA {self.smoothing:g}"] if self.smoothing else []
        if self.log_y:
            parts.append("log y")
        parts.append("x: seconds" if self.wall_time else "x: step")
        return ", ".join(parts)


def smooth(ys: list[float], weight: float) -> list[float]:
    """An exponential moving average of `ys` (weight 0: the values as they are)."""
    if not weight or not ys:
        return ys
    out, last = [], ys[0]
    for y in ys:
        last = weight * last + (1 - weight) * y
        out.append(last)
    return out


def integer_ticks(low: float, high: float, most: int = 6) -> list[int]:
    """At most `most` whole numbers from `low` to `high`, evenly spaced: steps are counted."""
    first, last = math.ceil(low), math.floor(high)
    if last < first:
        return [first]
    step = max(1, math.ceil((last - first) / max(1, most - 1)))
    return list(range(first, last + 1, step))


class MetricChart(PlotextPlot):
    """Metric curves (one series per metric or per run), of one key or several."""

    def show(
        self,
        series: dict[str, list[tuple[float, float]]],
        title: str,
        view: ChartView | None = None,
    ) -> None:
        view = view or ChartView()
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        drawn = {k: p for k, p in series.items() if p}
        positive = all(y > 0 for p in drawn.values() for _, y in p)
        log_y = view.log_y and positive and bool(drawn)
        plt.title(title + (f"  ({view.describe()})" if drawn else ""))
        plt.xlabel("seconds" if view.wall_time else "step")
        # No legend: it is drawn over the curves. One curve is named by the title; several
        # take CURVE_COLORS in the order given, which the caller shows beside them.
        for i, points in enumerate(series.values()):
            if points:
                xs, ys = zip(*points, strict=True)
                plt.plot(
                    list(xs),
                    smooth(list(ys), view.smoothing),
                    color=curve_color(i),
                    marker="braille",
                )
        if log_y:
            plt.yscale("log")
        if drawn and not view.wall_time:
            xs_all = [x for p in drawn.values() for x, _ in p]
            plt.xticks(integer_ticks(min(xs_all), max(xs_all)))
        self.refresh()


def curves(
    points: list[dict[str, Any]], wall_time: bool = False
) -> dict[str, list[tuple[float, float]]]:
    """A run's points as one (x, value) series per key: x the step (a point without one is
    placed at its line in the log, as live points are), or with `wall_time` the time it was
    read (epoch seconds)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        if p["value"] is None:  # NaN or infinite (JSON carries it as null): nothing to draw
            continue
        if wall_time:
            x = p.get("wall_time") or 0.0
        else:
            x = p["step"] if p["step"] is not None else p["line"]
        out.setdefault(p["key"], []).append((float(x), float(p["value"])))
    return out


def thin(curve: list[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    """About `most` points of a curve, as the daemon thins one for a chart: its ends, and the
    lowest and highest point of each of most/2 stretches, so a spike is never dropped."""
    if len(curve) <= most:
        return curve
    n, stretches = len(curve), max(1, most // 2)
    keep = {0, n - 1}
    for b in range(stretches):
        start, end = b * n // stretches, (b + 1) * n // stretches
        if start < end:
            ys = range(start, end)
            keep.add(min(ys, key=lambda i: curve[i][1]))
            keep.add(max(ys, key=lambda i: curve[i][1]))
    return [curve[i] for i in sorted(keep)]
