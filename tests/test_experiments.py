"""Experiment files: validation with file/key/line errors, and expansion into trials."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, load_experiment
from engine.model import Run, RunStatus, WatchPolicy
from engine.sweep import SweepError, command, is_adaptive, trials

GOOD = """\
name = "xgb-digits"
command = "python train.py --max-depth {max_depth} --eta {eta} --seed {seed}"
model_type = "XGBoost"
resources = { gpus = 1, gpu_mem_gb = 2, cpus = 2 }
metric = { name = "val_auc", mode = "max" }
capture = "xgboost"

[sweep]
method = "grid"
seeds = [0, 1, 2]
max_concurrent = 4

[sweep.params]
max_depth = [3, 5, 7]
eta = { low = 0.1, high = 0.3, step = 0.1 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_a_grid_expands_every_configuration_over_every_seed(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, GOOD))
    assert (exp.name, exp.method, exp.seeds, exp.max_concurrent, exp.models[0].capture) == (
        "xgb-digits",
        "grid",
        (0, 1, 2),
        4,
        ("xgboost",),
    )
    runs = trials(exp)
    assert len(runs) == 3 * 3 * 3
    assert runs[0].params == {"max_depth": 3, "eta": 0.1} and runs[0].seed == 0
    assert runs[0].argv == ("python", "train.py", "--max-depth", "3", "--eta", "0.1", "--seed", "0")
    assert {r.params["eta"] for r in runs} == {0.1, 0.2, 0.3}
    assert [r.config for r in runs[:4]] == [0, 0, 0, 1]


def test_random_sweeps_draw_with_optuna_reproducibly(tmp_path: Path) -> None:
    text = GOOD.replace('method = "grid"', 'method = "random"\ntrials = 8').replace(
        "eta = { low = 0.1, high = 0.3, step = 0.1 }",
        "eta = { low = 0.001, high = 0.3, log = true }",
    )
    exp = load_experiment(write(tmp_path, text))
    first, again = trials(exp, sampler_seed=7), trials(exp, sampler_seed=7)
    assert len(first) == 8 * 3 and first == again
    assert all(
        0.001 <= t.params["eta"] <= 0.3 and t.params["max_depth"] in (3, 5, 7) for t in first
    )
    assert len({t.params["eta"] for t in first}) == 8


def test_overrides_fix_parameters_and_sweep_settings(tmp_path: Path) -> None:
    exp = load_experiment(
        write(tmp_path, GOOD), {"max_depth": "5", "seeds": "[9]", "eta": "[0.05, 0.5]"}
    )
    assert [(t.params, t.seed) for t in trials(exp)] == [
        ({"max_depth": 5, "eta": 0.05}, 9),
        ({"max_depth": 5, "eta": 0.5}, 9),
    ]
    with pytest.raises(ConfigError, match=r"--set depth: not a parameter of this experiment"):
        load_experiment(write(tmp_path, GOOD), {"depth": "3"})


def test_hostile_values_stay_single_arguments(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, GOOD))
    argv = command(exp.models[0], {"max_depth": "'; touch PWNED", "eta": "$(id)"}, seed=1)
    assert argv == (
        "python",
        "train.py",
        "--max-depth",
        "'; touch PWNED",
        "--eta",
        "$(id)",
        "--seed",
        "1",
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("--eta {eta}", "--eta {lr}"), r"exp.toml:2: command: unknown parameter \{lr\}"),
        (
            ("max_depth = [3, 5, 7]", "max_depth = []"),
            r"exp.toml:\d+: sweep.params.max_depth: empty list",
        ),
        (
            ("low = 0.1, high = 0.3", "low = 0.3, high = 0.1"),
            r"sweep.params.eta: expected low ≤ high, got low = 0.3 and high = 0.1",
        ),
        (
            ("step = 0.1", "log = true"),
            r"sweep.params.eta: a grid needs a list, or a range with `step`",
        ),
        (
            ('capture = "xgboost"', 'capture = "xgb"'),
            r"exp.toml:6: capture: unknown capture preset 'xgb'",
        ),
        (
            ('method = "grid"', 'method = "bayes"'),
            r"sweep.method: expected one of 'grid', 'random', 'tpe', got 'bayes'",
        ),
        (('method = "grid"', 'method = "random"'), r"sweep.trials: a random sweep needs `trials`"),
        (("seeds = [0, 1, 2]", "seeds = []"), r"sweep.seeds: expected at least one seed"),
        (('mode = "max"', 'mode = "up"'), r"metric.mode: expected one of 'min', 'max', got 'up'"),
        (('name = "xgb-digits"', 'name = "has space"'), r"exp.toml:1: name: letters, digits"),
        (
            ('model_type = "XGBoost"', 'model_typ = "XGBoost"'),
            r"exp.toml:3: model_typ: unknown key; expected one of: name, command",
        ),
        (("gpus = 1,", "gpus = 'one',"), r"resources.gpus: expected an integer, got a string"),
        (('name = "xgb-digits"\n', ""), r"missing required key `name`"),
        (
            ("step = 0.1", "step = 0.1, log = true"),
            r"sweep.params.eta: a range takes `log` or `step`, not both",
        ),
        (
            ("[sweep.params]", "[sweep.params]\nlr = { low = 0, high = 1, log = true }"),
            r"sweep.params.lr: a log range needs low > 0",
        ),
        (
            ("[sweep]", '[watch]\non_nan = "explode"\n[sweep]'),
            r"exp.toml:\d+: watch.on_nan: expected .*flag.*stop.*, got 'explode'",
        ),
        (
            ("[sweep]", '[watch]\nstall_after_s = "soon"\n[sweep]'),
            r"exp.toml:\d+: watch.stall_after_s: expected a duration such as",
        ),
        (
            ("[sweep]", '[watch]\nmetrics = [""]\n[sweep]'),
            r"exp.toml:\d+: watch.metrics\[0\]: expected a metric's name",
        ),
    ],
)
def test_bad_experiments_name_file_key_and_expectation(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=expected) as caught:
        load_experiment(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_watch_becomes_each_trials_policy(tmp_path: Path) -> None:
    text = GOOD.replace(
        "[sweep]", '[watch]\nmetrics = "loss"\non_nan = "stop"\nstall_after_s = "30m"\n[sweep]'
    )
    exp = load_experiment(write(tmp_path, text))
    assert exp.watch == WatchPolicy(metrics=("loss",), on_nan="stop", stall_after_s=1800.0)
    assert load_experiment(write(tmp_path, GOOD)).watch == WatchPolicy()


def test_early_stopping_and_tpe_need_a_metric_and_sane_settings(tmp_path: Path) -> None:
    no_metric = GOOD.replace('metric = { name = "val_auc", mode = "max" }\n', "")
    with pytest.raises(ConfigError, match=r"sweep.method: tpe learns from a metric: set `metric`"):
        load_experiment(write(tmp_path, no_metric.replace('"grid"', '"tpe"\ntrials = 4')))
    stop = no_metric + '[sweep.early_stop]\nmethod = "asha"\n'
    with pytest.raises(ConfigError, match=r"sweep.early_stop.method: asha compares a metric"):
        load_experiment(write(tmp_path, stop))
    for setting, expected in [
        ("min_trials = 3", "sweep.early_stop.min_trials: applies to method = median only"),
        ("reduction_factor = 1", "sweep.early_stop.reduction_factor: expected 2 or more"),
        ("min_steps = 0", "sweep.early_stop.min_steps: expected 1 or more"),
        ("patience = 3", "sweep.early_stop.patience: unknown key"),
    ]:
        text = GOOD + f'[sweep.early_stop]\nmethod = "asha"\n{setting}\n'
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_experiment(write(tmp_path, text))
    fine = load_experiment(write(tmp_path, GOOD + '[sweep.early_stop]\nmethod = "median"\n'))
    assert fine.early_stop.method == "median" and is_adaptive(fine)
    assert not is_adaptive(load_experiment(write(tmp_path, GOOD)))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mangled_files_fail_with_one_clear_line_never_a_traceback(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    lines = GOOD.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    junk = data.draw(
        st.sampled_from(['"x"', "[]", "-1", "{ low = 5, high = 1 }", "true", "{", "= 3", "3.5"])
    )
    key = lines[i].split("=")[0].strip() if "=" in lines[i] else None
    lines[i] = f"{key} = {junk}" if key else junk
    path = tmp_path_factory.mktemp("exp") / "exp.toml"
    path.write_text("\n".join(lines) + "\n")
    try:
        exp = load_experiment(path)
        trials(exp)
    except (ConfigError, SweepError) as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)


ENSEMBLE = Path(__file__).resolve().parent.parent / "experiments" / "ensemble.toml"


def test_an_experiment_of_several_models_expands_each_with_its_own_params() -> None:
    exp = load_experiment(ENSEMBLE)
    assert [(m.name, m.model_type) for m in exp.models] == [
        ("glm", "GLM"),
        ("rf", "RandomForest"),
        ("xgb", "XGBoost"),
        ("mlp", "MLP"),
    ]
    runs = trials(exp)
    assert len(runs) == 4 * 2 * 3
    assert (
        runs[0].name(exp, "ensemble-1") == "ensemble-1-glm-000-s0"
        and runs[-1].name(exp, "ensemble-1") == "ensemble-1-mlp-001-s2"
    )
    assert {tuple(r.params) for r in runs if r.model == 2} == {("max_depth",)}
    assert "--max-depth" in runs[12].argv and runs[12].params == {"max_depth": 3}
    fixed = load_experiment(ENSEMBLE, {"max_depth": "[4]"})
    assert {r.params["max_depth"] for r in trials(fixed) if r.model == 2} == {4}


def test_bad_models_are_named_by_index(tmp_path: Path) -> None:
    text = ENSEMBLE.read_text()
    path = write(tmp_path, text.replace("--max-depth {max_depth}", "--max-depth {depth}"))
    with pytest.raises(
        ConfigError, match=r"exp.toml:\d+: models\[2\].command: unknown parameter \{depth\}"
    ):
        load_experiment(path)
    path = write(tmp_path, text.replace('name = "rf"', 'name = "glm"'))
    with pytest.raises(ConfigError, match=r"models\[1\].name: a unique name"):
        load_experiment(path)
    path = write(
        tmp_path, 'name = "x"\ncommand = "true"\n[[models]]\nname = "a"\ncommand = "true"\n'
    )
    with pytest.raises(
        ConfigError, match="give a top-level `command` or \\[\\[models\\]\\], not both"
    ):
        load_experiment(path)


def test_best_keeps_models_apart_when_their_params_coincide(tmp_path: Path) -> None:
    from engine.model import JobSpec, RunStatus
    from engine.store import Store, Transition

    from .conftest import metric_batch

    store = Store(tmp_path / "s.duckdb")
    sweep = store.add_sweep("e", "e.toml", "grid", 4, None, {"name": "auc", "mode": "max"})
    jobs = [
        (
            JobSpec(argv=("x",), cwd="/", sweep=sweep, model_type=m, params={"C": 1.0}),
            f"r{i}",
            seed,
            {},
        )
        for i, (m, seed) in enumerate([("GLM", 0), ("GLM", 1), ("SVM", 0), ("SVM", 1)])
    ]
    for run, value in zip(store.add_runs(jobs), [0.9, 0.8, 0.7, 0.75], strict=True):
        store.apply_transitions(
            [
                Transition(run.id, RunStatus.ASSIGNED, "a", {"host": "h"}),
                Transition(
                    run.id, RunStatus.STARTING, "s", {"attempt": 1, "host": "h", "run_dir": "/d"}
                ),
                Transition(run.id, RunStatus.RUNNING, "r"),
                Transition(run.id, RunStatus.SUCCEEDED, "ok", {"exit_code": 0}),
            ]
        )
        store.ingest(
            metric_batch(
                run.id, 1, ["auc", "auc"], [0, 1], [value - 0.1, value], [0, 1], (10, 2, 0), 0.0
            )
        )
    results = store.sweep_results(sweep, "auc", "max")
    assert [(r["model_type"], r["n"]) for r in results] == [("GLM", 2), ("SVM", 2)]
    assert results[0]["mean"] == pytest.approx(0.85) and results[1]["mean"] == pytest.approx(0.725)
    assert results[0]["std"] == pytest.approx(0.0707, abs=1e-4)
    store.close()


def test_templates_take_the_runs_own_fields_and_literal_braces(tmp_path: Path) -> None:
    from engine.runtime.dispatch import fill_runtime

    text = GOOD.replace(
        'command = "',
        "command = \"python -c 'print({{1: 2}})' --out {run_dir}/o{run_id} --flags {flags} ",
    )
    text = text.replace("[sweep.params]\n", "[sweep.params]\nflags = [[1, 2]]\nuse = [true]\n")
    exp = load_experiment(write(tmp_path, text))
    [first, *_] = trials(exp)
    assert first.argv[:7] == (
        "python", "-c", "print({{1: 2}})", "--out", "{run_dir}/o{run_id}", "--flags", "[1, 2]",
    )  # fmt: skip
    run = Run(id=42, name="n", status=RunStatus.QUEUED, argv=first.argv, cwd="/", seed=0,
              capture=(), created_at=0.0)  # fmt: skip
    filled = fill_runtime(run, 2, "/r/42", "/p")
    assert filled[2] == "print({1: 2})" and filled[4] == "/r/42/o42"
    for bad, why in (
        ("--x {x", "expected '}' before end of string"),
        ("--x {1:2}", "{1} in '{1:2}' is not a placeholder"),
        ("--x {nope}", "unknown parameter {nope}"),
    ):
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_experiment(write(tmp_path, GOOD.replace('command = "', f'command = "{bad} ')))
