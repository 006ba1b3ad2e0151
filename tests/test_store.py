"""The DuckDB store: migrations, the one transition function, atomic batched ingestion."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import msgspec
import pytest

from engine.model import HostSample, JobSpec, Run, RunStatus
from engine.store import (
    SCHEMA_VERSION,
    IllegalTransition,
    MetricBatch,
    Store,
    StoreError,
    StoreThread,
    Transition,
)
from engine.store.rows import RUN_COLUMNS, RUN_FIELDS

from .conftest import metric_batch


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.duckdb")
    yield s
    s.close()


def queue_one(store: Store, name: str = "r") -> int:
    [run] = store.add_runs([(JobSpec(argv=("echo", "hi"), cwd="/tmp"), name, 7, {"seed": 7})])
    return run.id


def start(store: Store, run_id: int) -> None:
    store.apply_transitions(
        [
            Transition(run_id, RunStatus.ASSIGNED, "placed", {"host": "local"}),
            Transition(
                run_id, RunStatus.STARTING, "go", {"attempt": 1, "host": "local", "run_dir": "/x"}
            ),
            Transition(run_id, RunStatus.RUNNING, "started", {"pid": 1}),
        ]
    )


def test_a_runs_environment_is_stored_once_and_its_manifest_read_back_whole(store: Store) -> None:
    env = {"HOME": "/home/me", "HF_TOKEN": "***"}
    manifest = {"hostname": "laptop", "env": env, "seed": 7, "command": "echo hi"}
    [run] = store.add_runs([(JobSpec(argv=("echo", "hi"), cwd="/tmp", env=env), "r", 7, manifest)])
    [(stored,)] = store.con.execute("SELECT manifest FROM runs WHERE id = ?", [run.id]).fetchall()
    assert "HOME" not in stored and msgspec.json.decode(stored)["hostname"] == "laptop"
    assert store.run_details(run.id)["manifest"] == manifest
    # A run queued before the environment was left out keeps the one its manifest holds.
    older = manifest | {"env": {"HOME": "/home/then"}}
    store.con.execute(
        "UPDATE runs SET manifest = ? WHERE id = ?", [msgspec.json.encode(older).decode(), run.id]
    )
    assert store.run_details(run.id)["manifest"] == older


def test_a_call_from_another_thread_is_refused_not_left_to_race(store: Store) -> None:
    run_id = queue_one(store)
    with ThreadPoolExecutor(max_workers=1) as other:
        refused = other.submit(store.get_run, run_id).exception()
    assert isinstance(refused, StoreError)
    assert "StoreThread.call" in str(refused)
    assert store.get_run(run_id) is not None  # the owner's calls are untouched


def test_schema_is_created_once_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path).close()
    again = Store(path)
    assert again.schema_version() == SCHEMA_VERSION
    tables = {
        r[0]
        for r in again.con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert {
        "hosts",
        "runs",
        "attempts",
        "metrics",
        "events",
        "log_offsets",
        "host_samples",
        "schema_version",
    } <= tables
    assert again.con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    again.close()


def test_a_store_from_a_newer_engine_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer than this engine"):
        Store(path)


def test_transitions_write_events_and_attempts(store: Store) -> None:
    run_id = queue_one(store)
    start(store, run_id)
    [attempt] = store.run_details(run_id)["attempts"]
    assert attempt["status"] == "running" and attempt["ended_at"] is None
    store.apply_transitions(
        [
            Transition(
                run_id,
                RunStatus.SUCCEEDED,
                "exit code 0",
                {"exit_code": 0, "ended_at": time.time()},
            )
        ]
    )
    details = store.run_details(run_id)
    assert [(e["from"], e["to"]) for e in details["events"]] == [
        (None, "queued"),
        ("queued", "assigned"),
        ("assigned", "starting"),
        ("starting", "running"),
        ("running", "succeeded"),
    ]
    assert details["events"][-1]["reason"] == "exit code 0"
    [attempt] = details["attempts"]
    assert (
        attempt["status"] == "succeeded"
        and attempt["exit_code"] == 0
        and attempt["host"] == "local"
    )
    assert store.get_run(run_id).reason == "exit code 0"


def test_an_illegal_transition_changes_nothing(store: Store) -> None:
    run_id = queue_one(store)
    with pytest.raises(IllegalTransition, match="assigned → running is not allowed"):
        store.apply_transitions(
            [
                Transition(run_id, RunStatus.ASSIGNED, "ok", {"host": "local"}),
                Transition(run_id, RunStatus.RUNNING, "skip"),
            ]
        )
    assert store.get_run(run_id).status is RunStatus.QUEUED
    assert len(store.run_details(run_id)["events"]) == 1


def test_ingest_moves_the_offset_with_the_points_atomically(store: Store) -> None:
    run_id = queue_one(store)
    start(store, run_id)
    n = 200_000
    batch = metric_batch(
        run_id, 1, ["loss"] * n, list(range(n)), [0.5] * n, list(range(n)), (4096, n, 2)
    )
    store.ingest(batch)
    assert store.metric_count(run_id) == n
    position = store.log_position(run_id, 1)
    assert (position.byte_offset, position.lines, position.bad_markers) == (4096, n, 2)
    broken = metric_batch(run_id, 1, ["loss"], [None], [1.0], [n], (9999, n + 1, 2))
    store.con.execute("DROP TABLE log_offsets")  # make the offset update fail mid-batch
    store.con.execute("CREATE TABLE log_offsets (run_id BIGINT)")
    with pytest.raises(duckdb.Error):
        store.ingest(broken)
    assert store.metric_count(run_id) == n  # the batch's points were rolled back with it


def _lose_and_retry(store: Store, run_id: int) -> None:
    """Attempt 1 printed three points, then its host was lost; attempt 2 starts."""
    store.ingest(
        metric_batch(
            run_id, 1, ["loss"] * 3, [0, 1, 2], [9.0] * 3, [0, 1, 2], (30, 3, 0), first=True
        )
    )
    lost = {"failure_class": "host_lost", "ended_at": 5.0}
    store.apply_transitions(
        [
            Transition(run_id, RunStatus.UNREACHABLE, "host away"),
            Transition(run_id, RunStatus.QUEUED, "attempt 1 failed (host_lost)", lost),
            Transition(run_id, RunStatus.ASSIGNED, "placed", {"host": "other"}),
            Transition(
                run_id,
                RunStatus.STARTING,
                "go",
                {"attempt": 2, "host": "other", "run_dir": "/y", "failure_class": None},
            ),
            Transition(run_id, RunStatus.RUNNING, "started", {"pid": 2}),
        ]
    )


def test_a_retried_runs_record_is_its_final_attempts(store: Store) -> None:
    run_id = queue_one(store)
    start(store, run_id)
    _lose_and_retry(store, run_id)
    assert store.metric_summaries([run_id])[run_id]["loss"]["count"] == 3  # until it prints
    batch = metric_batch(run_id, 2, ["loss"] * 2, [0, 1], [0.5, 0.25], [0, 1], (20, 2, 0), 2.0)
    store.ingest(msgspec.structs.replace(batch, first=True))
    summary = store.metric_summaries([run_id])[run_id]["loss"]
    assert (summary["count"], summary["max"], summary["last"]) == (2, 0.5, 0.25)
    assert [p["value"] for p in store.metrics(run_id)] == [0.5, 0.25]
    assert [p["value"] for p in store.metrics(run_id, attempt=1)] == [9.0] * 3
    assert store.get_run(run_id).failure_class is None  # cleared as attempt 2 started
    assert store.abandoned_attempts() == {"local": [(run_id, 1)]}
    store.settle_abandoned(run_id, 1, "its copy on local was killed")
    assert store.abandoned_attempts() == {}
    first = store.run_details(run_id)["attempts"][0]
    assert first["reason"] == "attempt 1 failed (host_lost); its copy on local was killed"


def test_a_store_from_before_final_attempt_summaries_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = Store(path)
    run_id = queue_one(store)
    start(store, run_id)
    _lose_and_retry(store, run_id)
    batch = metric_batch(run_id, 2, ["loss"], [0], [0.5], [0], (20, 1, 0), 2.0)
    store.ingest(batch)  # as schema version 9 kept it: both attempts' points in one summary
    store.con.execute("ALTER TABLE attempts DROP COLUMN abandoned")
    store.con.execute("DELETE FROM schema_version WHERE version >= 10")
    assert store.metric_summaries([run_id])[run_id]["loss"]["count"] == 4
    store.close()
    again = Store(path)
    try:
        assert again.metric_summaries([run_id])[run_id]["loss"]["count"] == 1
        assert again.abandoned_attempts() == {}  # nothing is known to be left running
    finally:
        again.close()


def test_metrics_for_a_chart_keep_each_curves_ends_extremes_and_order(store: Store) -> None:
    """100,000 steps of two keys thinned to about 400 points each: the first and last points,
    a one-step spike and dip stay, in log order; a key with fewer points keeps them all."""
    run_id = queue_one(store)
    start(store, run_id)
    n = 100_000
    loss = [1 / (i + 1) for i in range(n)]
    loss[61_234], loss[7_777] = 50.0, -3.0  # a spike and a dip, one step each
    keys = ["loss"] * n + ["lr"] * 10
    steps = list(range(n)) + list(range(0, n, n // 10))
    lines = [2 * i for i in range(n)] + [2 * i + 1 for i in range(0, n, n // 10)]
    values = loss + [0.1] * 10
    store.ingest(metric_batch(run_id, 1, keys, steps, values, lines, (1, 1, 0)))
    points = store.metrics(run_id, max_points=400)
    curve = [(p["step"], p["value"]) for p in points if p["key"] == "loss"]
    assert 200 <= len(curve) <= 402
    assert curve[0] == (0, 1.0) and curve[-1] == (n - 1, loss[-1])
    assert (61_234, 50.0) in curve and (7_777, -3.0) in curve
    assert [p["line"] for p in points] == sorted(p["line"] for p in points)
    assert [p for p in points if p["key"] == "lr"] == store.metrics(run_id, key="lr")
    assert len(store.metrics(run_id)) == n + 10  # without max_points, every point


def test_bulk_writes_after_single_row_reads_work(store: Store) -> None:
    """DuckDB refuses a bulk insert on a connection whose last result was left half-read; every
    store read must leave it clean (host samples are inserted with no transaction around them)."""
    run_id = queue_one(store)
    start(store, run_id)
    sample = HostSample("local", 1.0, 5.0, (5.0,), 1.0, 2.0)
    reads = (
        lambda: store.get_run(run_id),
        lambda: store.find_run("r"),
        lambda: store.log_position(run_id, 1),
        lambda: store.run_details(run_id),
        lambda: store.schema_version(),
    )
    for read in reads:
        read()
        store.append_host_samples([sample])
    assert store.host_sample_count("local") == len(reads)


def test_a_store_from_before_text_search_words_gets_them(tmp_path: Path) -> None:
    from engine.core.filters import parse_filter
    from engine.model import RunQuery

    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.add_runs([(JobSpec(argv=("python", "train.py", "--lr", "0.1"), cwd="/"), "Alpha", 1, {})])
    for column in ("words", "data", "templated"):  # as schema version 6 left it
        store.con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    store.con.execute("ALTER TABLE sweeps DROP COLUMN sampler_seed")
    store.con.execute("ALTER TABLE attempts DROP COLUMN abandoned")
    store.con.execute("DELETE FROM schema_version WHERE version >= 7")
    store.close()
    again = Store(path)
    try:
        for text, found in (("train.py --LR 0.1", 1), ("alpha python", 1), ("--lr 0.2", 0)):
            assert again.runs_page(RunQuery(**parse_filter(text)))[0] == found, text
        again.con.execute("CHECKPOINT")  # (written to disk, where compression is chosen)
        stored = again.con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('runs')"
            " WHERE column_name = 'words' AND segment_type = 'VARCHAR'"
        ).fetchall()
        assert stored == [("Uncompressed",)]  # read without decompressing, as filters scan it
    finally:
        again.close()


def test_runs_page_filters_sorts_and_counts_as_a_plain_sort_would(tmp_path: Path) -> None:
    """Every window of every sort (both directions, nulls last, ties by id) and filter is the
    matching slice of the whole list sorted in Python, with the right total: whichever way the
    store sorts (a top-N heap or a full sort) and counts (with the window or on its own)."""
    from engine.core.filters import parse_filter
    from engine.model import RunQuery
    from tests.conftest import fill_store

    fill_store(tmp_path, 240)
    store = Store(tmp_path / "store.duckdb")
    try:
        jobs = [(JobSpec(argv=("echo", str(i)), cwd="/"), f"Queued-{i}", i, {}) for i in range(9)]
        store.add_runs(jobs)  # no host, never started, no metrics: the nulls
        runs = store.list_runs()
        summaries = store.metric_summaries([r.id for r in runs])

        def key(run, sort: str):  # type: ignore[no-untyped-def]
            if sort == "duration":
                return None if run.started_at is None else run.ended_at - run.started_at
            if sort == "metric:auc":
                return summaries[run.id].get("auc", {}).get("last")
            return getattr(run, sort)

        def has(run, needle: str) -> bool:  # type: ignore[no-untyped-def]
            command = " ".join([run.name, *run.argv]).lower()
            return needle in command or needle in (run.reason or "").lower()

        filters = {
            "": lambda r: True,
            "failed": lambda r: r.status is RunStatus.FAILED,
            "status:queued": lambda r: r.status is RunStatus.QUEUED,
            "auc>0.6": lambda r: (key(r, "metric:auc") or 0) > 0.6,
            "RUN-0001": lambda r: has(r, "run-0001"),
            "failed run-00": lambda r: r.status is RunStatus.FAILED and has(r, "run-00"),
            "echo": lambda r: has(r, "echo"),  # in the command
            "filled": lambda r: has(r, "filled"),  # in the reason
            "run_0001": lambda r: False,  # `_` is a character, not a pattern's wildcard
            "host:local": lambda r: r.host == "local",
            "nothing-like-this": lambda r: False,
        }
        for sort in ("id", "name", "status", "host", "duration", "metric:auc"):
            for descending in (True, False):
                for query_text, wanted in filters.items():
                    matching = [r for r in runs if wanted(r)]
                    valued = sorted(
                        (r for r in matching if key(r, sort) is not None),
                        key=lambda r: (key(r, sort), r.id),
                        reverse=descending,
                    )
                    nulls = sorted(
                        (r for r in matching if key(r, sort) is None),
                        key=lambda r: r.id,
                        reverse=descending,
                    )
                    expected = [r.id for r in valued + nulls]
                    for offset in (0, 7, max(0, len(expected) - 5), len(expected) + 3):
                        query = RunQuery(
                            **parse_filter(query_text),
                            sort=sort,
                            descending=descending,
                            offset=offset,
                            limit=25,
                        )
                        total, page, metrics = store.runs_page(query)
                        where = (sort, descending, query_text, offset)
                        assert total == len(expected), where
                        assert [r.id for r in page] == expected[offset : offset + 25], where
                        assert metrics == {r.id: summaries[r.id] for r in page}, where
        assert store.con.execute("SELECT current_setting('disabled_optimizers')").fetchone() == (
            "",
        )  # a full sort is asked for one query at a time
    finally:
        store.close()


def test_a_page_shown_again_shows_what_changed_since(tmp_path: Path) -> None:
    """Pages keep ended runs' rows in memory; every write to a run or its metrics reaches the
    next page all the same: a retry, a hold, new points, an import."""
    import pyarrow as pa

    from engine.model import RunQuery
    from tests.conftest import fill_store

    fill_store(tmp_path, 30)
    store = Store(tmp_path / "store.duckdb")
    try:
        query = RunQuery(sort="id", descending=False, limit=30)

        def page() -> dict[int, tuple]:  # type: ignore[type-arg]
            _, runs, metrics = store.runs_page(query)
            return {r.id: (r, metrics[r.id]) for r in runs}

        before = page()
        assert page() == before  # read again, now from memory
        failed = next(i for i, (r, _) in before.items() if r.status is RunStatus.FAILED)
        store.apply_transitions([Transition(failed, RunStatus.QUEUED, "retried by user")])
        store.set_queue_fields(failed, "held by user", {"held": True, "priority": 5})
        run = page()[failed][0]
        assert (run.status, run.reason, run.held, run.priority) == (
            RunStatus.QUEUED,
            "retried by user",
            True,
            5,
        )
        other = next(i for i, (r, _) in before.items() if r.status is RunStatus.SUCCEEDED)
        store.ingest(
            metric_batch(other, 1, ["late"], [9], [0.5], [99], (999, 99, 0))
        )  # points of an ended run, as a re-read after a crash stores them
        assert page()[other][1]["late"]["last"] == 0.5
        columns = {"run_id": [other], "attempt": [1], "key": ["loss"], "step": [10]}
        columns |= {"value": [-1.0], "wall_time": [2.0], "line": [100]}
        store.import_points(pa.table(columns))
        assert page()[other][1]["loss"]["min"] == -1.0
        unchanged = set(before) - {failed, other}
        assert all(page()[i] == before[i] for i in unchanged)
    finally:
        store.close()


def test_points_of_one_line_come_back_in_the_order_they_were_printed(store: Store) -> None:
    from engine.core.capture import Parser
    from engine.core.points import Points

    run_id = queue_one(store)
    start(store, run_id)
    lines = [b'@runyard {"step": 1, "val_loss": 0.5, "acc": 0.7, "b": 1}'] * 2 + [
        b'@runyard {"zeta": 1, "alpha": NaN}'  # the slower path, one line at a time
    ]
    points = Points()
    Parser().parse(lines, 0, points)
    store.ingest(MetricBatch(run_id, 1, points, 1.0, 1, 3, 0))
    for shown in (store.metrics(run_id), store.metrics(run_id, max_points=100)):
        keys = [(p["line"], p["key"]) for p in shown]
        assert keys == [
            (0, "val_loss"), (0, "acc"), (0, "b"), (1, "val_loss"), (1, "acc"), (1, "b"),
            (2, "zeta"), (2, "alpha"),
        ]  # fmt: skip


def test_the_runs_columns_are_one_list_that_matches_run_and_the_table(store: Store) -> None:
    # A run column is declared once (engine/store/rows.py) and added by a migration.
    assert Run.__struct_fields__ == RUN_FIELDS
    table = {
        name
        for (name,) in store.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'"
        ).fetchall()
    }
    assert {c.name for c in RUN_COLUMNS} <= table


async def test_a_read_aside_answers_while_the_store_thread_is_busy_and_sees_its_commits(
    tmp_path: Path,
) -> None:
    """`engine show` and `engine runs` read on the store's second connection: they do not
    queue behind the writes of many runs' points, and they see what those committed."""
    import asyncio
    import threading

    db = StoreThread(tmp_path / "store.duckdb")
    try:
        run_id = await db.call(queue_one, db.store)
        release = threading.Event()
        busy = asyncio.ensure_future(db.call(release.wait, 30))  # the store thread, taken
        details = await db.read(db.store.run_details, run_id)
        assert not busy.done() and details["events"][0]["to"] == "queued"
        [listed] = await db.read(db.store.list_runs, [], 10, 0, None)
        assert listed.id == run_id
        release.set()
        await busy
        await db.call(start, db.store, run_id)
        assert (await db.read(db.store.get_run, run_id)).status is RunStatus.RUNNING
    finally:
        db.close()


def test_batches_of_rows_and_of_arrow_columns_go_in_together_in_order(store: Store) -> None:
    """One transaction of many runs' batches, some Python rows and some whole Arrow columns:
    every point lands on its own run, in the order printed, and `last` is the newest."""
    from engine.core.capture import Parser
    from engine.core.points import ARROW_LINES, Points

    a, b = queue_one(store, "a"), queue_one(store, "b")
    start(store, a)
    start(store, b)

    def batch(run_id: int, first: int, n: int, position: int) -> MetricBatch:
        points = Points()
        block = b"".join(b'@runyard {"step": %d, "x": %d}\n' % (i, i) for i in range(first, n))
        Parser().parse_block(block, first, points)
        return MetricBatch(run_id, 1, points, 1.0, position, n, 0)

    big = batch(b, 0, ARROW_LINES + 1, 100)
    assert big.points.parts
    store.ingest(batch(a, 0, 3, 10), big, batch(a, 3, 5, 20))
    assert [p["value"] for p in store.metrics(a)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [p["line"] for p in store.metrics(b)] == list(range(ARROW_LINES + 1))
    summaries = store.metric_summaries([a, b])
    assert summaries[a]["x"]["last"] == 4.0 and summaries[a]["x"]["count"] == 5
    assert (
        summaries[b]["x"]["last"] == ARROW_LINES and summaries[b]["x"]["count"] == ARROW_LINES + 1
    )
    assert store.log_position(a, 1).byte_offset == 20
