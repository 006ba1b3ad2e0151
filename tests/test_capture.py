"""Metric capture: markers, presets, regexes; malformed lines are counted and never crash."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.capture import CaptureError, Parser
from engine.core.points import ARROW_LINES, SCHEMA, Points


def parse(
    lines: list[bytes], specs: tuple[str, ...] = (), first: int = 0
) -> tuple[list[tuple], int]:
    points = Points()
    bad = Parser(specs).parse(lines, first, points)
    rows = sorted(zip(points.lines, points.keys, points.steps, points.values, strict=True))
    return rows, bad


def test_marker_lines_become_points_with_step_and_line() -> None:
    rows, bad = parse(
        [
            b'@runyard {"step": 3, "loss": 0.5, "acc": 0.75}',
            b"plain output",
            b'@runyard {"loss": 0.25}',
        ],
        first=10,
    )
    assert bad == 0
    assert rows == [(10, "acc", 3, 0.75), (10, "loss", 3, 0.5), (12, "loss", None, 0.25)]


def test_keys_that_are_not_identifiers_work() -> None:
    rows, _ = parse([b'@runyard {"val/loss": 1, "train-acc": 2.5, "class": 3}'])
    assert [(k, v) for _, k, _, v in rows] == [
        ("class", 3.0),
        ("train-acc", 2.5),
        ("val/loss", 1.0),
    ]


def test_malformed_markers_are_counted_and_the_rest_still_parse() -> None:
    lines = [
        b'@runyard {"step": 1, "loss": 0.5}',
        b"@runyard {not json",
        b"@runyard [1, 2]",
        b'@runyard "text"',
        b'@runyard {"step": 1.5, "loss": 1}',
        b'@runyard {"step": "two", "loss": 1}',
        b'@runyard {"step": 2, "loss": 0.4}',
        b"\xff\xfe@runyard binary junk",
    ]
    rows, bad = parse(lines)
    assert bad == 5
    assert rows == [(0, "loss", 1, 0.5), (6, "loss", 2, 0.4)]


def test_nan_and_non_numeric_values() -> None:
    rows, bad = parse([b'@runyard {"loss": NaN, "phase": "train", "ok": true, "lr": Infinity}'])
    assert bad == 0
    assert [k for _, k, _, _ in rows] == ["loss", "lr"]
    assert math.isnan(rows[0][3]) and rows[1][3] == math.inf


def test_progress_bar_carriage_returns_show_the_last_segment() -> None:
    rows, _ = parse([b'50%|####  \r100%|########\r@runyard {"step": 9, "loss": 0.1}'])
    assert rows == [(0, "loss", 9, 0.1)]


def test_presets() -> None:
    lines = [
        b"[12]\teval-auc:0.93\ttrain-logloss:0.2",
        b"epoch: 2, loss: 0.41, acc: 0.9",
        b"step=3 lr=1e-3 tokens=1200",
        b"{'loss': 0.5, 'learning_rate': 5e-05, 'epoch': 0.1, 'step': 7}",
        b"nothing to see",
    ]
    rows, _ = parse(lines, ("xgboost", "colon", "equals", "dict"))
    assert (0, "eval-auc", 12, 0.93) in rows and (0, "train-logloss", 12, 0.2) in rows
    assert {(k, v) for n, k, _, v in rows if n == 1} == {
        ("epoch", 2.0),
        ("loss", 0.41),
        ("acc", 0.9),
    }
    assert {(k, s, v) for n, k, s, v in rows if n == 2} == {("lr", 3, 0.001), ("tokens", 3, 1200.0)}
    assert {(k, s) for n, k, s, _ in rows if n == 3} == {
        ("loss", 7),
        ("learning_rate", 7),
        ("epoch", 7),
    }
    assert not [r for r in rows if r[0] == 4]


def test_presets_are_opt_in() -> None:
    rows, _ = parse([b"loss: 0.5", b"[1]\teval-auc:0.9"])
    assert rows == []


def test_user_regexes_with_named_groups() -> None:
    rows, _ = parse(
        [b"Epoch 4/10 - val_acc 0.771", b"metric top1=0.5", b"other"],
        (
            r"Epoch (?P<step>\d+)/\d+ - val_acc (?P<val_acc>[0-9.]+)",
            r"metric (?P<key>\w+)=(?P<value>[0-9.]+)",
        ),
    )
    assert rows == [(0, "val_acc", 4, 0.771), (1, "top1", None, 0.5)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("xgb", "unknown capture preset 'xgb'; expected one of colon, dict, equals, xgboost"),
        ("(?P<loss>[0-9.]+", "does not compile"),
        (r"step (?P<step>\d+)", "no named group for a value"),
    ],
)
def test_bad_capture_specs_are_refused_clearly(spec: str, message: str) -> None:
    with pytest.raises(CaptureError, match=message.replace("(", r"\(").replace("?", r"\?")):
        Parser((spec,))


def test_a_million_uniform_markers_parse_exactly() -> None:
    lines = [b'@runyard {"step": %d, "loss": %d.5}' % (i, i) for i in range(100_000)]
    points = Points()
    assert Parser().parse(lines, 0, points) == 0
    assert len(points) == 100_000
    assert (
        points.steps[-1] == 99_999 and points.values[-1] == 99_999.5 and points.lines[-1] == 99_999
    )


marker = st.fixed_dictionaries(
    {"step": st.integers(0, 10**6)},
    optional={"loss": st.floats(allow_nan=False, allow_infinity=False), "acc": st.integers(-5, 5)},
).map(lambda d: b"@runyard " + json.dumps(d).encode())
line = st.one_of(
    marker,
    st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.just(b"@runyard {broken"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(line, max_size=40), st.lists(st.integers(0, 40), max_size=5))
def test_any_batching_of_a_log_yields_the_same_points(lines: list[bytes], cuts: list[int]) -> None:
    """Reading a log in any batches (as after a restart from a stored offset) neither drops nor
    duplicates a point."""
    whole, whole_bad = parse(lines)
    parser, points, bad, start = Parser(), Points(), 0, 0
    for cut in [*sorted({min(c, len(lines)) for c in cuts}), len(lines)]:
        bad += parser.parse(lines[start:cut], start, points)
        start = cut
    batched = sorted(zip(points.lines, points.keys, points.steps, points.values, strict=True))
    assert batched == whole and bad == whole_bad


uniform = st.builds(
    lambda step, loss: b'@runyard {"step": %d, "loss": %s}' % (step, json.dumps(loss).encode()),
    st.integers(0, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
)
marker_line = st.one_of(
    uniform,
    uniform,
    marker,
    st.just(b"@runyard {broken"),
    st.just(b'@runyard {"step": "x"}'),
    st.just(b"@runyard "),  # a marker with nothing, or only blanks, after it
    st.just(b"@runyard  \t "),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(marker_line, marker_line, line, st.just(b"")), min_size=1, max_size=30),
    st.booleans(),
)
def test_a_block_of_markers_parses_as_its_lines_do(lines: list[bytes], ended: bool) -> None:
    """Given the block as read, markers are cut from it in one go when every line is one:
    the same points and the same count of malformed ones as line by line."""
    block = b"\n".join(lines) + (b"\n" if ended else b"")
    by_lines, bad = parse(lines, first=7)
    points = Points()
    count, from_block = Parser().parse_block(block, 7, points)
    rows = sorted(zip(points.lines, points.keys, points.steps, points.values, strict=True))
    lines_in_block = len(block.split(b"\n")) - block.endswith(b"\n") if block else 0
    assert (rows, from_block, count) == (by_lines, bad, lines_in_block)


def test_xgboost_cv_lines_give_the_mean_and_the_std() -> None:
    lines = [b"[0]\ttrain-auc:0.96+0.004\ttest-auc:0.9412+0.0123", b"[1]\ttest-logloss:1e-05+2e-06"]
    rows, bad = parse(lines, ("xgboost",))
    assert bad == 0
    assert rows == [
        (0, "test-auc", 0, 0.9412),
        (0, "test-auc_std", 0, 0.0123),
        (0, "train-auc", 0, 0.96),
        (0, "train-auc_std", 0, 0.004),
        (1, "test-logloss", 1, 1e-05),
        (1, "test-logloss_std", 1, 2e-06),
    ]


def test_preset_shaped_lines_that_do_not_parse_are_counted_not_dropped() -> None:
    lines = [b"[3]\teval-auc:0.9\teval-error:n/a", b"{'loss': 0.4, 'acc': }", b"[4]\teval-auc:0.91"]
    rows, bad = parse(lines, ("xgboost", "dict"))
    assert bad == 2
    assert rows == [(2, "eval-auc", 4, 0.91)]


def test_a_uniform_block_of_several_keys_becomes_points_in_the_order_printed() -> None:
    """Whole columns go in row by row: each line's keys as printed, a null value dropped, the
    newest points last (what a client's chart is sent) and each key's own points in order."""
    block = b"".join(
        b'@runyard {"step": %d, "loss": %s, "acc": %d.5, "lr": 0.1}\n'
        % (i, b"null" if i == 2 else b"%d" % i, i)
        for i in range(4)
    )
    points = Points()
    assert Parser().parse_block(block, 10, points) == (4, 0)
    rows = list(zip(points.lines, points.keys, points.steps, points.values, strict=True))
    assert rows[:4] == [
        (10, "loss", 0, 0.0),
        (10, "acc", 0, 0.5),
        (10, "lr", 0, 0.1),
        (11, "loss", 1, 1.0),
    ]
    assert (12, "loss", 2, None) not in rows and len(rows) == 11
    assert points.tail(2) == [("acc", 3, 3.5, 13), ("lr", 3, 0.1, 13)]
    assert points.of_key("loss") == [(0, 0.0), (1, 1.0), (3, 3.0)]
    assert points.table().schema == SCHEMA


def test_a_large_uniform_block_gives_what_its_lines_give_one_by_one() -> None:
    """A block long enough to go to Arrow whole gives the same points, in the same order, as
    its lines parsed alone (which become Python rows)."""
    lines = [
        b'@runyard {"step": %d, "loss": %s, "acc": %d.5}' % (i, b"null" if i % 7 else b"%d" % i, i)
        for i in range(ARROW_LINES + 3)
    ]
    whole = Points()
    assert Parser().parse_block(b"\n".join(lines) + b"\n", 5, whole) == (len(lines), 0)
    assert whole.parts and whole.as_rows() is None  # it did go to Arrow
    one_by_one = Points()
    for i, line in enumerate(lines):
        Parser().parse_block(line + b"\n", 5 + i, one_by_one)
    assert not one_by_one.parts
    assert whole.table().equals(one_by_one.table())
    assert whole.tail(3) == one_by_one.tail(3)
    assert whole.of_key("loss") == one_by_one.of_key("loss")


def test_points_of_plain_lines_and_markers_keep_the_order_printed() -> None:
    """Plain lines are read as they are scanned and markers after: the newest point is still
    the last printed, so a run's `last` value is the one it printed last."""
    points = Points()
    lines = [b"loss: 0.5", b'@runyard {"loss": 0.3}', b"loss: 0.4", b'@runyard {"loss": 0.2}']
    assert Parser(("colon",)).parse(lines, 0, points) == 0
    assert points.tail(1) == [("loss", None, 0.2, 3)]
    assert points.of_key("loss") == [(None, 0.5), (None, 0.3), (None, 0.4), (None, 0.2)]
    assert points.lines == [0, 1, 2, 3]
