"""The runs filter bar."""

from __future__ import annotations

from tui.widgets.typed_input import TypedInput

# What `?` shows beside the runs table and the filter: the filter's language, with examples.
FILTER_HELP = """\
## Filter (`/`)

Terms, all of which must hold (or join them with `and`, `or`, `not` and parentheses):

- a status: `failed`, `running`, or `status:running,queued`
- `host:gpu-box`, `sweep:xgb-1`, `model:XGBoost`
- a metric's latest value: `val_auc>0.9`, `loss<=0.1` (`> < >= <= =` and a number)
- any other word, or a `"quoted phrase"`: searched for in names, commands and reasons

Examples: `failed or cancelled`, `not host:gpu-box`, `"exit code 3"`,
`(failed or lost) and sweep:xgb-1`, `model:MLP val_auc>0.95`.
"""


class FilterBar(TypedInput):
    """The runs filter. Its virtual width is at least the bar's own, so typing a character
    changes no size: an Input's virtual width otherwise follows its text, and Textual lays
    out the whole screen on every keystroke."""

    HELP = FILTER_HELP

    @property
    def content_width(self) -> int:
        return max(super().content_width, self.scrollable_content_region.width)
