"""The Optuna side of adaptive sweeps, driven as the daemon drives it: TPE asks as runs end,
pruners judge intermediate values, and a restarted daemon replays what had ended."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec

from engine.config import load_experiment
from engine.model import Run, RunStatus
from engine.sweep import AdaptiveSweep, Trial

EXPERIMENT = """\
name = "toy"
command = "python train.py --x {x} --width {width} --seed {seed}"
metric = { name = "score", mode = "max" }
[sweep]
method = "tpe"
trials = 40
seeds = [0]
[sweep.params]
x = { low = -5.0, high = 5.0 }
width = [8, 16, 32]
"""


def experiment(tmp_path: Path, text: str = EXPERIMENT):  # type: ignore[no-untyped-def]
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return load_experiment(path)


def as_run(run_id: int, trial: Trial, status: RunStatus = RunStatus.RUNNING) -> Run:
    return Run(
        id=run_id,
        name=f"run-{run_id}",
        status=status,
        argv=trial.argv,
        cwd="/",
        seed=trial.seed,
        capture=(),
        created_at=0.0,
        params=trial.params,
        trial=(trial.model, trial.config),
    )


def score(params: dict) -> float:
    return -((params["x"] - 2.0) ** 2) - (0.5 if params["width"] != 16 else 0.0)


def test_tpe_asks_as_runs_end_and_learns_where_the_optimum_is(tmp_path: Path) -> None:
    sweep = AdaptiveSweep(experiment(tmp_path), sampler_seed=3)
    proposed = []
    for run_id in range(40):
        [trial] = sweep.ask(1)
        run = as_run(run_id, trial)
        sweep.attach(run)
        assert sweep.report(run_id, [(0, score(trial.params))]) is None  # no pruner here
        sweep.finish(msgspec.structs.replace(run, status=RunStatus.SUCCEEDED))
        proposed.append(trial)
    assert sweep.remaining() == 0 and sweep.ask(5) == []
    assert [t.config for t in proposed] == list(range(40))
    assert proposed[0].argv[:3] == ("python", "train.py", "--x")
    early = sum(abs(t.params["x"] - 2.0) for t in proposed[:10]) / 10
    late = sum(abs(t.params["x"] - 2.0) for t in proposed[-10:]) / 10
    assert late < early / 2, (early, late)  # TPE, not random search, chose the later ones
    assert sum(t.params["width"] == 16 for t in proposed[-10:]) >= 6
    assert sweep.studies[0].best_value == max(score(t.params) for t in proposed)


def test_each_seed_of_a_sampled_configuration_is_its_own_trial(tmp_path: Path) -> None:
    sweep = AdaptiveSweep(experiment(tmp_path, EXPERIMENT.replace("[0]", "[0, 1, 2]")))
    batch = sweep.ask(2)
    assert [(t.config, t.seed) for t in batch] == [(c, s) for c in (0, 1) for s in (0, 1, 2)]
    assert batch[0].params == batch[2].params != batch[3].params
    for run_id, trial in enumerate(batch):
        sweep.attach(as_run(run_id, trial))
    trials = sweep.studies[0].get_trials(deepcopy=False)
    c0, c1 = batch[0].params, batch[3].params  # sampled first; the other seeds join on start
    assert [t.params for t in trials] == [c0, c1, c0, c0, c1, c1]


def test_the_median_rule_prunes_a_run_that_falls_behind(tmp_path: Path) -> None:
    text = EXPERIMENT.replace('"tpe"\ntrials = 40', '"grid"').replace(
        "x = { low = -5.0, high = 5.0 }", "x = [1.0, 0.9, 0.1, 0.95]"
    )
    text += '[sweep.early_stop]\nmethod = "median"\nmin_trials = 2\nmin_steps = 1\n'
    exp = experiment(tmp_path, text)
    from engine.sweep import trials

    planned = [t for t in trials(exp) if t.params["width"] == 8]
    sweep = AdaptiveSweep(exp)
    for run_id, trial in enumerate(planned[:2]):  # two good runs end first
        run = as_run(run_id, trial)
        sweep.attach(run)
        assert sweep.report(run_id, [(s, trial.params["x"]) for s in range(10)]) is None
        sweep.finish(msgspec.structs.replace(run, status=RunStatus.SUCCEEDED))
    bad, fine = as_run(2, planned[2]), as_run(3, planned[3])
    sweep.attach(bad)
    sweep.attach(fine)
    assert sweep.report(2, [(0, 0.1)]) is None  # step 0 is warm-up
    assert sweep.report(2, [(1, 0.1)]) == "pruned by median at step 1: score = 0.1"
    assert sweep.report(3, [(0, 0.95), (1, 0.95), (2, 0.95)]) is None
    sweep.finish(msgspec.structs.replace(bad, status=RunStatus.PRUNED))
    states = [t.state.name for t in sweep.studies[0].get_trials(deepcopy=False)]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "RUNNING"]


def test_asha_stops_the_worse_runs_at_each_rung(tmp_path: Path) -> None:
    text = EXPERIMENT.replace("40", "12") + (
        '[sweep.early_stop]\nmethod = "asha"\nmin_steps = 1\nreduction_factor = 2\n'
    )
    sweep = AdaptiveSweep(experiment(tmp_path, text))
    pruned = {}
    for run_id, trial in enumerate(sweep.ask(12)):
        sweep.attach(as_run(run_id, trial))
        # run i is worse than every run before it: at each rung only the better half goes on
        for step in range(8):
            reason = sweep.report(run_id, [(step, 1.0 - run_id / 100)])
            if reason:
                pruned[run_id] = reason
                break
        status = RunStatus.PRUNED if run_id in pruned else RunStatus.SUCCEEDED
        sweep.finish(msgspec.structs.replace(as_run(run_id, trial), status=status))
    assert 0 not in pruned and len(pruned) >= 8, pruned
    assert all(r.startswith("pruned by asha at step ") for r in pruned.values())


def test_a_restarted_study_replays_ended_runs_and_samples_on(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    first = AdaptiveSweep(exp, sampler_seed=1)
    ended = []
    for run_id, trial in enumerate(first.ask(6)):
        status = RunStatus.SUCCEEDED if run_id != 4 else RunStatus.FAILED
        ended.append((as_run(run_id, trial, status), [(0, score(trial.params))]))
    pruned_trial = first.ask(1)[0]
    ended.append((as_run(6, pruned_trial, RunStatus.PRUNED), [(0, -9.0), (1, -8.0)]))
    again = AdaptiveSweep(exp, sampler_seed=1)
    for run, points in ended:
        again.replay(run, points)
    assert again.asked == [7] and again.remaining() == 33
    states = [t.state.name for t in again.studies[0].get_trials(deepcopy=False)]
    assert states == ["COMPLETE"] * 4 + ["FAIL", "COMPLETE", "PRUNED"]
    best = max(score(r.params) for r, _ in ended if r.status is RunStatus.SUCCEEDED)
    assert math.isclose(again.studies[0].best_value, best)
    [next_trial] = again.ask(1)
    assert next_trial.config == 7


def test_tpe_never_samples_a_configuration_twice_and_stops_when_the_space_is_used_up(
    tmp_path: Path,
) -> None:
    small = EXPERIMENT.replace("x = { low = -5.0, high = 5.0 }\n", "C = [0.1, 1.0, 10.0]\n")
    exp = experiment(
        tmp_path, small.replace("--x {x}", "--C {C}").replace("trials = 40", "trials = 20")
    )
    study = AdaptiveSweep(exp, sampler_seed=3)
    seen = []
    run_id = 0
    while batch := study.ask(1):
        for trial in batch:
            run_id += 1
            run = as_run(run_id, trial)
            study.attach(run)
            study.report(run_id, [(0, trial.params["width"] / 10)])
            study.finish(msgspec.structs.replace(run, status=RunStatus.SUCCEEDED))
            seen.append(tuple(sorted(trial.params.items())))
    assert len(seen) == len(set(seen)) == 9  # 3 by 3 configurations, each once
    assert study.remaining() == 0


def test_each_sweep_draws_its_own_sampler_seed_unless_one_is_given(tmp_path: Path) -> None:
    from engine.sweep import trials

    text = EXPERIMENT.replace('"tpe"', '"random"').replace("trials = 40", "trials = 5")
    exp = experiment(tmp_path, text)
    a, b = trials(exp, 1), trials(exp, 2)
    assert [t.params for t in a] != [t.params for t in b]
    fixed = experiment(tmp_path, text.replace("[sweep]\n", "[sweep]\nsampler_seed = 7\n"))
    assert fixed.sampler_seed == 7 and [t.params for t in trials(fixed)] == [
        t.params for t in trials(fixed)
    ]
