"""The runs filter language: random text is a result or a FilterError, never anything else;
every filter that parses runs as SQL on a real store; `or`, `not`, groups and phrases select
what a plain Python reading of the same runs selects."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.filters import FilterError, parse_filter
from engine.model import RunQuery
from engine.store import Store

from .conftest import fill_store

RUNS = 70  # every 7th failed (10), the rest succeeded

# Text made of the language's own pieces, and of anything else.
PIECES = st.sampled_from(
    [
        "failed",
        "succeeded",
        "or",
        "and",
        "not",
        "(",
        ")",
        '"',
        '"run-00001"',
        "host:local",
        "host:",
        "sweep:big-1",
        "model:MLP",
        "status:failed,succeeded",
        "status:bogus",
        "auc>0.9",
        "auc>abc",
        "loss<=0.5",
        "loss=",
        "run-000042",
        " ",
        ":",
        ">",
        "=",
        "1e999",
        "train",
    ]
)
FILTERS = st.one_of(
    st.lists(PIECES, max_size=12).map(" ".join),
    st.text(max_size=40),
)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="ry-") as folder:
        fill_store(Path(folder), RUNS)
        opened = Store(Path(folder) / "store.duckdb")
        yield opened
        opened.close()


@settings(max_examples=400, deadline=None)
@given(FILTERS)
def test_any_text_is_a_filter_or_a_filter_error(text: str) -> None:
    try:
        fields = parse_filter(text)
    except FilterError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    RunQuery(**fields)  # the fields are a query's


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(PIECES, max_size=10).map(" ".join))
def test_every_filter_that_parses_runs_on_a_real_store(store: Store, text: str) -> None:
    try:
        fields = parse_filter(text)
    except FilterError:
        return
    total, runs, _ = store.runs_page(RunQuery(**fields, limit=200))
    assert total == len(runs) <= RUNS


def _ids(store: Store, text: str) -> set[int]:
    total, runs, _ = store.runs_page(RunQuery(**parse_filter(text), limit=1000))
    assert total == len(runs)
    return {r.id for r in runs}


def test_or_not_groups_and_phrases_select_what_they_say(store: Store) -> None:
    every = set(range(1, RUNS + 1))
    failed = {i for i in every if i % 7 == 0}
    assert _ids(store, "failed") == failed
    assert _ids(store, "failed or succeeded") == every
    assert _ids(store, "not failed") == every - failed
    assert _ids(store, "not host:gpu-box") == every  # no run has that host: none excluded
    assert _ids(store, "failed and not failed") == set()
    high = {
        r.id for r in store.runs_page(RunQuery(metric_filters=(("auc", ">", 0.52),), limit=1000))[1]
    }
    assert 0 < len(high) < RUNS
    assert _ids(store, "auc>0.52 or failed") == high | failed
    assert _ids(store, "(failed or auc>0.52) and not sweep:other") == high | failed
    assert _ids(store, 'not "run-00000"') == {i for i in every if i > 10}  # run-000000 … 009
    assert _ids(store, '"run-000042" or "run-000043"') == {43, 44}
    assert _ids(store, "run-000042") == {43}


def test_a_comparison_with_a_non_number_is_an_error_not_an_empty_table() -> None:
    with pytest.raises(FilterError, match=r"'val_auc>abc': 'abc' is not a number"):
        parse_filter("val_auc>abc")
    with pytest.raises(FilterError, match="unknown status 'bogus'"):
        parse_filter("status:bogus")
    with pytest.raises(FilterError, match="incomplete or misplaced term"):
        parse_filter("failed or")
    assert parse_filter('"exit code 3"')["text"] == ("exit code 3",)
    assert parse_filter('"a\tb\\c"')["text"] == ("a\tb\\c",)  # as typed: no escapes
