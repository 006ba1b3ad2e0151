"""Metric curves as a braille chart, and the points behind one: grouped by key, thinned to a chart's width."""

from __future__ import annotations

from typing import Any

from textual_plotext import PlotextPlot

CHART_POINTS = 2000  # per curve: a chart is at most a few hundred columns of braille


CHART_REDRAW_S = 0.5  # live points redraw a chart at most this often


class MetricChart(PlotextPlot):
    """Metric curves (step on x, one series per metric or per run), of one key or all."""

    def show(self, series: dict[str, list[tuple[float, float]]], title: str) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        plt.xlabel("step")
        for label, points in series.items():
            if points:
                xs, ys = zip(*points, strict=True)
                plt.plot(list(xs), list(ys), label=label[:24], marker="braille")
        self.refresh()


def curves(points: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """A run's points as one (step, value) series per key; a point without a step is placed
    at its line in the log, as live points are."""
    out: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        if p["value"] is None:  # NaN or infinite (JSON carries it as null): nothing to draw
            continue
        step = p["step"] if p["step"] is not None else p["line"]
        out.setdefault(p["key"], []).append((float(step), float(p["value"])))
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
