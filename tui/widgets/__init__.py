"""Dashboard widgets, one per module. They are given data (attributes down) and never talk to the daemon."""

from tui.widgets.cells import (
    STATUS_STYLE,
    bar,
    middle_cut,
    replace_lines,
    run_list,
    since_text,
    spark,
)
from tui.widgets.filter_bar import FilterBar
from tui.widgets.footer import Footer
from tui.widgets.host_pane import HISTORY, HostPane
from tui.widgets.lines import Lines
from tui.widgets.metric_chart import CHART_POINTS, CHART_REDRAW_S, MetricChart, curves, thin
from tui.widgets.queue_table import QueueTable
from tui.widgets.runs_table import RunsTable
from tui.widgets.typed_input import TypedInput

__all__ = [
    "CHART_POINTS",
    "CHART_REDRAW_S",
    "HISTORY",
    "STATUS_STYLE",
    "FilterBar",
    "Footer",
    "HostPane",
    "Lines",
    "MetricChart",
    "QueueTable",
    "RunsTable",
    "TypedInput",
    "bar",
    "curves",
    "middle_cut",
    "replace_lines",
    "run_list",
    "since_text",
    "spark",
    "thin",
]
