"""plan(): a pure function, shown table by table, and a property that it never over-commits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import Route
from engine.core.scheduler import GpuState, HostCapacity, Plan, QueuedJob, Snapshot, plan
from engine.model import Resources

GB = 1024.0


def gpu(
    index: int, total_gb: float = 24, free_gb: float | None = None, reserved_gb: float = 0
) -> GpuState:
    free = total_gb if free_gb is None else free_gb
    return GpuState(
        index=index, total_mb=total_gb * GB, free_mb=free * GB, reserved_mb=reserved_gb * GB
    )


def host(
    name: str, max_jobs: int = 4, state: str = "up", tags: tuple[str, ...] = (), **kw
) -> HostCapacity:  # type: ignore[no-untyped-def]
    kw.setdefault("cpus", 8.0)
    kw.setdefault("mem_gb", 32.0)
    return HostCapacity(name=name, state=state, max_jobs=max_jobs, tags=tags, **kw)


def job(run_id: int, **kw) -> QueuedJob:  # type: ignore[no-untyped-def]
    kw.setdefault("queued_at", 0.0)
    return QueuedJob(run_id=run_id, **kw)


def gpu_job(run_id: int, gpus: int = 1, mem_gb: float = 0, **kw) -> QueuedJob:  # type: ignore[no-untyped-def]
    return job(run_id, resources=Resources(gpus=gpus, gpu_mem_gb=mem_gb), **kw)


def run(hosts, queue, routes=(), now=100.0, sweeps=None) -> Plan:  # type: ignore[no-untyped-def]
    return plan(
        Snapshot(
            now=now,
            hosts=tuple(hosts),
            queue=tuple(queue),
            routes=tuple(routes),
            running_per_sweep=sweeps or {},
        )
    )


def placed(result: Plan) -> dict[int, tuple[str, tuple[int, ...]]]:
    return {a.run_id: (a.host, a.gpus) for a in result.assignments}


XGB = Route(
    model_type="XGBoost", tags=(), prefer=("gpu-box",), fallback=("local",), fallback_after_s=None
)


# --- fit ---------------------------------------------------------------------------------


def test_slots_are_filled_in_host_order_then_jobs_wait_with_a_reason() -> None:
    result = run([host("a", max_jobs=1), host("b", max_jobs=1, active=0)], [job(1), job(2), job(3)])
    assert placed(result) == {1: ("a", ()), 2: ("b", ())}
    assert result.waiting[3] == "waits: a: all 1 slots busy; b: all 1 slots busy"


def test_cpus_and_memory_count_what_is_already_reserved() -> None:
    hosts = [host("a", cpus=4, reserved_cpus=3, mem_gb=16, reserved_mem_gb=10)]
    result = run(
        hosts,
        [
            job(1, resources=Resources(cpus=2)),
            job(2, resources=Resources(mem_gb=8)),
            job(3, resources=Resources(cpus=1, mem_gb=6)),
        ],
    )
    assert placed(result) == {3: ("a", ())}
    assert result.waiting[1] == "waits: a: needs 2 CPUs, 1 free"
    assert result.waiting[2] == "waits: a: needs 8 GB memory, 6.0 GB free"


def test_a_gpu_offers_the_smaller_of_unreserved_and_nvml_free() -> None:
    # 24 GB card: 10 reserved by the engine; another program holds 20 GB, so NVML says 4 free.
    busy = host("gpu-box", gpus=(gpu(0, total_gb=24, free_gb=4, reserved_gb=10),))
    result = run([busy], [gpu_job(1, mem_gb=6), gpu_job(2, mem_gb=4)])
    assert placed(result) == {2: ("gpu-box", (0,))}
    assert (
        result.waiting[1]
        == "waits: gpu-box: needs 1 GPU(s) with 6 GB free; the roomiest has 4.0 GB free"
    )


def test_two_jobs_never_race_for_one_gpu() -> None:
    result = run(
        [host("gpu-box", gpus=(gpu(0, total_gb=12),))], [gpu_job(1, mem_gb=8), gpu_job(2, mem_gb=8)]
    )
    assert placed(result) == {1: ("gpu-box", (0,))}
    assert "needs 1 GPU(s) with 8 GB free; the roomiest has 4.0 GB free" in result.waiting[2]


def test_small_jobs_pack_onto_one_gpu_best_fit() -> None:
    gpus = (gpu(0, total_gb=24), gpu(1, total_gb=24, reserved_gb=16, free_gb=8))
    result = run(
        [host("gpu-box", gpus=gpus)],
        [gpu_job(1, mem_gb=4), gpu_job(2, mem_gb=4), gpu_job(3, mem_gb=4)],
    )
    # GPU 1 has 8 GB left: the first two pack onto it, the third goes to GPU 0
    assert placed(result) == {1: ("gpu-box", (1,)), 2: ("gpu-box", (1,)), 3: ("gpu-box", (0,))}


def test_an_oom_retry_prefers_the_roomiest_gpu() -> None:
    gpus = (gpu(0, total_gb=24), gpu(1, total_gb=24, reserved_gb=16, free_gb=8))
    result = run([host("gpu-box", gpus=gpus)], [gpu_job(1, mem_gb=4, roomy_gpu=True)])
    assert placed(result) == {1: ("gpu-box", (0,))}


def test_an_unsized_gpu_job_takes_a_whole_unused_gpu() -> None:
    gpus = (gpu(0, reserved_gb=1), gpu(1))
    result = run([host("g", gpus=gpus)], [gpu_job(1), gpu_job(2), gpu_job(3, mem_gb=2)])
    assert placed(result) == {1: ("g", (1,)), 3: ("g", (0,))}
    assert result.waiting[2] == "waits: g: needs 1 GPU(s) to itself; all are in use"


def test_multi_gpu_jobs_and_hosts_without_enough_gpus() -> None:
    result = run(
        [host("one", gpus=(gpu(0),)), host("two", gpus=(gpu(0), gpu(1)))],
        [gpu_job(1, gpus=2, mem_gb=10)],
    )
    assert placed(result) == {1: ("two", (0, 1))}
    result = run([host("cpu-only")], [gpu_job(1)])
    assert result.waiting[1] == "waits: cpu-only: needs 1 GPU(s), has 0"


# --- routing -------------------------------------------------------------------------------


def test_routes_prefer_in_order_and_requires_filters_hosts() -> None:
    hosts = [host("local", tags=("cpu",)), host("gpu-box", tags=("cuda", "xgboost"))]
    queue = [
        job(1, model_type="XGBoost"),
        job(2, model_type="GLM"),
        job(3, requires=("cuda",)),
        job(4, requires=("tpu",)),
    ]
    result = run(hosts, queue, routes=[XGB])
    assert placed(result) == {1: ("gpu-box", ()), 2: ("local", ()), 3: ("gpu-box", ())}
    assert result.waiting[4] == "waits: local: lacks tags tpu; gpu-box: lacks tags tpu"


def test_route_tags_match_job_tags() -> None:
    route = Route(model_type=None, tags=("big",), prefer=("b",), fallback=(), fallback_after_s=None)
    result = run(
        [host("a"), host("b")], [job(1, tags=("big", "x")), job(2, tags=("x",))], routes=[route]
    )
    assert placed(result) == {1: ("b", ()), 2: ("a", ())}


def test_fallback_when_preferred_hosts_are_down_or_unreachable() -> None:
    for state in ("down", "unreachable", "disabled"):
        result = run(
            [host("local"), host("gpu-box", state=state)],
            [job(1, model_type="XGBoost")],
            routes=[XGB],
        )
        assert placed(result) == {1: ("local", ())}, state
        assert "preferred hosts are down: fallback" in result.assignments[0].reason


def test_no_fallback_while_a_preferred_host_is_up_but_full() -> None:
    hosts = [host("local"), host("gpu-box", max_jobs=1, active=1)]
    result = run(hosts, [job(1, model_type="XGBoost")], routes=[XGB])
    assert result.assignments == []
    assert result.waiting[1].startswith("waits: gpu-box: all 1 slots busy")


def test_fallback_after_waiting_long_enough() -> None:
    patient = Route(
        model_type="XGBoost", tags=(), prefer=("gpu-box",), fallback=("local",), fallback_after_s=60
    )
    hosts = [host("local"), host("gpu-box", max_jobs=1, active=1)]
    queue = [
        job(1, model_type="XGBoost", queued_at=50.0),
        job(2, model_type="XGBoost", queued_at=30.0),
    ]
    result = run(hosts, queue, routes=[patient], now=100.0)
    assert placed(result) == {2: ("local", ())}
    assert "waited 70s ≥ 60s: fallback" in result.assignments[0].reason
    assert result.waiting[1].startswith("waits: gpu-box: all 1 slots busy")


def test_a_requested_host_is_the_only_candidate() -> None:
    result = run([host("a"), host("b", max_jobs=1, active=1)], [job(1, requested_host="b")])
    assert result.waiting[1] == "waits: b: all 1 slots busy (requested host)"


# --- queue order ---------------------------------------------------------------------------


def test_priority_then_submission_order() -> None:
    result = run([host("a", max_jobs=2)], [job(3), job(1), job(2, priority=5), job(4, priority=5)])
    assert [a.run_id for a in result.assignments] == [2, 4]


def test_max_concurrent_per_sweep_counts_running_and_planned() -> None:
    queue = [job(i, sweep="s", max_concurrent=3) for i in range(1, 6)] + [
        job(9, sweep="t", max_concurrent=1)
    ]
    result = run([host("a", max_jobs=10)], queue, sweeps={"s": 1})
    assert sorted(placed(result)) == [1, 2, 9]
    assert result.waiting[3] == "sweep s runs its max_concurrent=3"


def test_held_jobs_and_retry_backoff_wait() -> None:
    result = run(
        [host("a")],
        [job(1, held=True), job(2, not_before=130.0), job(3, not_before=90.0)],
        now=100.0,
    )
    assert placed(result) == {3: ("a", ())}
    assert result.waiting == {1: "held", 2: "retry backoff: may start in 30s"}


# --- the property -------------------------------------------------------------------------

gpus_st = st.lists(
    st.builds(
        lambda total, used, res: GpuState(
            0, total * GB, max(0.0, total - used) * GB, min(res, total) * GB
        ),
        st.integers(1, 80),
        st.integers(0, 80),
        st.integers(0, 80),
    ),
    min_size=1,
    max_size=4,
).map(lambda gs: tuple(GpuState(i, g.total_mb, g.free_mb, g.reserved_mb) for i, g in enumerate(gs)))
hosts_st = st.lists(
    st.builds(
        lambda i, max_jobs, active, cpus, rc, gpus, state: HostCapacity(
            name=f"h{i}",
            state=state,
            max_jobs=max_jobs,
            active=min(active, max_jobs),
            cpus=cpus,
            mem_gb=64,
            reserved_cpus=min(rc, cpus),
            gpus=gpus,
        ),
        st.integers(),
        st.integers(1, 6),
        st.integers(0, 6),
        st.integers(1, 16),
        st.integers(0, 16),
        gpus_st,
        st.sampled_from(["up", "up", "up", "unreachable"]),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda h: h.name,
)
jobs_st = st.lists(
    st.builds(
        lambda i, cpus, gpus, mem, prio: QueuedJob(
            run_id=i,
            queued_at=0,
            priority=prio,
            resources=Resources(cpus=cpus, gpus=gpus, gpu_mem_gb=mem),
        ),
        st.integers(0, 10_000),
        st.sampled_from([0, 0, 1, 2, 4]),
        st.sampled_from([0, 0, 1, 2]),
        st.sampled_from([0, 2, 8, 20]),
        st.integers(-2, 2),
    ),
    max_size=30,
    unique_by=lambda j: j.run_id,
)


@settings(max_examples=300, deadline=None)
@given(hosts_st, jobs_st)
def test_no_plan_over_commits_a_host_or_a_gpu(
    hosts: list[HostCapacity], jobs: list[QueuedJob]
) -> None:
    result = run(hosts, jobs)
    by_id = {j.run_id: j for j in jobs}
    assert set(placed(result)) | set(result.waiting) == set(by_id)
    for h in hosts:
        mine = [by_id[a.run_id] for a in result.assignments if a.host == h.name]
        assert not mine or h.state == "up"
        assert h.active + len(mine) <= h.max_jobs
        assert h.reserved_cpus + sum(j.resources.cpus for j in mine) <= h.cpus + 1e-9
        for g in h.gpus:
            on_it = [
                by_id[a.run_id]
                for a in result.assignments
                if a.host == h.name and g.index in a.gpus
            ]
            if any(j.resources.gpu_mem_gb == 0 for j in on_it):
                assert len(on_it) == 1 and g.reserved_mb == 0  # whole-GPU jobs are alone on it
            else:
                assert sum(j.resources.gpu_mem_gb * GB for j in on_it) <= g.available_mb + 1e-6
    for a in result.assignments:
        assert len(a.gpus) == by_id[a.run_id].resources.gpus and len(set(a.gpus)) == len(a.gpus)


@settings(max_examples=300, deadline=None)
@given(hosts_st, jobs_st)
def test_a_plan_that_stops_when_hosts_are_full_starts_what_the_whole_plan_starts(
    hosts: list[HostCapacity], jobs: list[QueuedJob]
) -> None:
    whole = run(hosts, jobs)
    ordered = tuple(sorted(jobs, key=lambda j: (-j.priority, j.run_id)))
    snapshot = Snapshot(now=100.0, hosts=tuple(hosts), queue=ordered, ordered=True)
    quick = plan(snapshot, until_full=True)
    assert quick.assignments == whole.assignments
    assert set(quick.waiting) <= set(whole.waiting)


def test_a_plan_over_a_long_queue_stops_at_the_first_full_house() -> None:
    queue = [job(i) for i in range(10_000)]
    quick = plan(Snapshot(now=0.0, hosts=(host("a", max_jobs=2),), queue=tuple(queue)), True)
    assert placed(quick) == {0: ("a", ()), 1: ("a", ())}
    assert quick.waiting == {}  # nothing after the house was full was even looked at
    assert len(run([host("a", max_jobs=2)], queue).waiting) == 9_998


def test_jobs_pinned_to_a_host_that_cannot_take_them_cost_a_plan_next_to_nothing() -> None:
    """10,000 runs queued for a disabled host, and one that may go anywhere behind them: a
    dispatch tick places that one without weighing each pinned run (it says nothing of them;
    `explain` does)."""
    pinned = [job(i, requested_host="parked") for i in range(10_000)]
    hosts = (host("a", max_jobs=2), host("parked", state="disabled"))
    snapshot = Snapshot(now=0.0, hosts=hosts, queue=(*pinned, job(10_000)), ordered=True)
    quick = plan(snapshot, until_full=True)
    assert placed(quick) == {10_000: ("a", ())} and quick.waiting == {}
    whole = plan(snapshot)
    assert whole.waiting[0] == "waits: parked: disabled (requested host)"


@settings(max_examples=300, deadline=None)
@given(hosts_st, jobs_st, st.integers(min_value=0, max_value=30))
def test_a_plan_of_the_first_jobs_gives_them_what_the_whole_plan_gives(
    hosts: list[HostCapacity], jobs: list[QueuedJob], first: int
) -> None:
    """`engine queue` explains a page of the queue by planning only that page."""
    ordered = tuple(sorted(jobs, key=lambda j: (-j.priority, j.run_id)))
    snapshot = Snapshot(now=100.0, hosts=tuple(hosts), queue=ordered, ordered=True)
    whole, page = plan(snapshot), plan(snapshot, first=first)
    shown = {j.run_id for j in ordered[:first]}
    assert page.assignments == [a for a in whole.assignments if a.run_id in shown]
    assert page.waiting == {i: why for i, why in whole.waiting.items() if i in shown}
