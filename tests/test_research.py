"""The research workflow around a sweep, through the real CLI and daemon: a baseline and its
ablations compared over matched seeds (checked against SciPy on the same numbers)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from scipy import stats

from engine.client import connect

from .conftest import Project, wait_until

SCORE = """\
def score(params, seed):
    import math
    effect = 0.05 * params["scale"] - 0.03 * (params["cw"] == "none") + 0.01 * math.log10(params["C"])
    noise = ((seed + 1) * (3 + 2 * params["scale"] + len(params["cw"]) + params["C"]) % 7) / 1000
    return 0.8 + effect + noise
"""
TRAIN = (
    SCORE
    + """
import json, os
params, seed = json.loads(os.environ["RUNYARD_PARAMS"]), int(os.environ["RUNYARD_SEED"])
print("@runyard", json.dumps({"step": 0, "auc": score(params, seed)}))
"""
)
EXPERIMENT = """\
name = "abl"
command = "{python} train.py"
metric = {{ name = "auc", mode = "max" }}
[sweep]
method = "grid"
seeds = [0, 1, 2, 3]
[sweep.params]
C = [1.0, 10.0]
scale = [true]
cw = ["balanced"]
[baseline]
C = 1.0
[ablations]
scale = false
cw = "none"
C = 0.1
"""


def score(params: dict[str, object], seed: int) -> float:
    namespace: dict[str, object] = {}
    exec(SCORE, namespace)  # the trainer's own formula
    return namespace["score"](params, seed)  # type: ignore[operator,no-any-return]


def test_a_baseline_and_three_ablations_give_paired_differences_as_scipy_does(
    project: Project,
) -> None:
    (project.folder / "train.py").write_text(TRAIN)
    exp = project.folder / "abl.toml"
    exp.write_text(EXPERIMENT.format(python=sys.executable))
    dry = project.engine("sweep", str(exp), "--dry-run")
    assert "  4 configurations (a baseline and 3 ablations) x 4 seeds\n" in dry.stderr
    launched = project.engine("sweep", str(exp), "--wait", timeout=120)
    assert launched.returncode == 0, launched.stderr
    assert "16 trials" in launched.stderr  # the baseline and 3 ablations, 4 seeds each
    best = json.loads(project.engine("best", "abl-1", "--json").stdout)
    baseline = {"C": 1.0, "scale": True, "cw": "balanced"}
    assert best["baseline"] == baseline
    configs = {json.dumps(c["params"], sort_keys=True): c for c in best["configs"]}
    [base] = [c for c in best["configs"] if c.get("baseline")]
    assert base["params"] == baseline and "vs_baseline" not in base
    seeds = [0, 1, 2, 3]
    expected_base = [score(baseline, s) for s in seeds]
    for change in ({"scale": False}, {"cw": "none"}, {"C": 0.1}):
        params = baseline | change
        vs = configs[json.dumps(params, sort_keys=True)]["vs_baseline"]
        values = [score(params, s) for s in seeds]
        test = stats.ttest_rel(values, expected_base)
        diffs = [a - b for a, b in zip(values, expected_base, strict=True)]
        assert vs["n"] == 4 and math.isclose(vs["delta"], sum(diffs) / 4, abs_tol=1e-12)
        assert math.isclose(vs["t"], test.statistic, rel_tol=1e-9), (change, vs, test)
        assert math.isclose(vs["p"], test.pvalue, rel_tol=1e-9)
        assert vs["significant"] == (test.pvalue < 0.05)
        assert vs["wilcoxon_p"] is None  # 4 pairs cannot reach 5% in Wilcoxon's test
        low, high = vs["ci95"]
        assert low < vs["delta"] < high
    # Two runs side by side, one pinned as the baseline: the other's metric as a difference.
    ablated = configs[json.dumps(baseline | {"scale": False}, sort_keys=True)]["best_run"]
    side = json.loads(
        project.engine(
            "compare", str(ablated), "--baseline", str(base["best_run"]), "--json"
        ).stdout
    )
    assert [r["id"] for r in side["runs"]] == [base["best_run"], ablated]
    [auc] = side["metrics"]
    first, second = auc["runs"]
    assert "delta" not in first and math.isclose(second["delta"], second["last"] - first["last"])
    text = project.engine("compare", str(ablated), "--baseline", str(base["best_run"])).stdout
    assert f" Δ {second['delta']:+.4g}" in text
    # Any configuration of the sweep as the baseline: every other one against it.
    against = json.loads(
        project.engine("compare", "--sweep", "abl-1", "--baseline", "cw=none", "--json").stdout
    )
    [pinned] = [c for c in against["configs"] if c.get("baseline")]
    assert pinned["params"] == baseline | {"cw": "none"}
    back = next(c for c in against["configs"] if c["params"] == baseline)["vs_baseline"]
    assert math.isclose(
        back["delta"],
        -configs[json.dumps(pinned["params"], sort_keys=True)]["vs_baseline"]["delta"],
    )
    vague = project.engine("compare", "--sweep", "abl-1", "--baseline", "scale=true")
    assert (
        vague.returncode == 1 and "3 configurations of sweep abl-1 have scale=True" in vague.stderr
    )
    # The scaling and class-weight ablations hurt clearly; the CLI stars them.
    table = project.engine("best", "abl-1").stdout
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CONFIG"))
    assert lines[start + 1].startswith("baseline ")
    rows = {line.split()[0]: line for line in lines[start + 2 : start + 5]}
    assert set(rows) == {"scale=False", "cw=none", "C=0.1"}
    assert "*" in rows["scale=False"].split()[5] and "*" in rows["cw=none"].split()[5]
    latex = project.engine("export", "abl-1", "--format", "latex").stdout
    body = latex.split("\\midrule\n")[1].splitlines()
    assert body[0].startswith("baseline & ")
    assert any(line.startswith("scale=False & ") and "^*" in line for line in body)
    out = project.folder / "report"
    assert project.engine("report", "abl-1", "--out", str(out), timeout=120).returncode == 0
    index = (out / "index.md").read_text()
    assert "## Against the baseline" in index
    [row] = [line for line in index.splitlines() if line.startswith("| scale=False | ")]
    assert "| **-0.046" in row and "| 3.03e-05 |" in row, row  # Δ -0.04625, bold: significant


def test_baselines_and_ablations_are_checked_where_they_are_written(project: Project) -> None:
    exp = project.folder / "abl.toml"
    for broken, said in (
        (EXPERIMENT.replace("C = 0.1", "C = 1.0"), "abl.toml:16: ablations.C: 1.0 is the baseline"),
        (
            EXPERIMENT.replace('cw = "none"', "depth = 3"),
            "abl.toml:15: ablations.depth: not a parameter",
        ),
        (
            EXPERIMENT.replace("[baseline]\nC = 1.0\n", "[baseline]\n"),
            "baseline: set C: it has more than one value",
        ),
        (
            EXPERIMENT.replace('"grid"', '"random"\ntrials = 3'),
            "sweep.method: a sweep with a [baseline]",
        ),
    ):
        exp.write_text(broken.format(python=sys.executable))
        checked = project.engine("validate", str(exp))
        assert checked.returncode == 2 and said in checked.stderr, (said, checked.stderr)
    assert Path(exp).exists()


FOLD_TRAIN = """\
import json, os, sys
fold, seed = int(os.environ["RUNYARD_FOLD"]), int(os.environ["RUNYARD_SEED"])
assert sys.argv[1:] == ["--fold", str(fold), "--folds", "3"], sys.argv
lr = json.loads(os.environ["RUNYARD_PARAMS"])["lr"]
print("@runyard", json.dumps({"step": 0, "acc": lr + fold / 10 + seed / 100}))
"""


def test_folds_replicate_each_configuration_and_are_aggregated_as_one(project: Project) -> None:
    """folds = 3 with 2 seeds: 6 runs per configuration, each told its fold ({fold} and
    RUNYARD_FOLD), summed up as one configuration over all 6; exports keep each run's fold."""
    (project.folder / "train.py").write_text(FOLD_TRAIN)
    exp = project.folder / "cv.toml"
    exp.write_text(
        f'name = "cv"\ncommand = "{sys.executable} train.py --fold {{fold}} --folds 3"\n'
        'metric = { name = "acc", mode = "max" }\n'
        '[sweep]\nmethod = "grid"\nseeds = [0, 1]\nfolds = 3\n[sweep.params]\nlr = [0.5, 0.7]\n'
    )
    assert (
        "  2 configurations x 3 folds x 2 seeds"
        in project.engine("sweep", str(exp), "--dry-run").stderr
    )
    launched = project.engine("sweep", str(exp), "--wait", timeout=120)
    assert launched.returncode == 0, launched.stderr
    runs = json.loads(project.engine("runs", "--json", "--limit", "50").stdout)
    assert len(runs) == 12 and all(r["status"] == "succeeded" for r in runs)
    assert sorted(r["name"] for r in runs)[:3] == [
        "cv-1-000-f0-s0",
        "cv-1-000-f0-s1",
        "cv-1-000-f1-s0",
    ]
    assert sorted((r["fold"], r["seed"]) for r in runs if r["params"]["lr"] == 0.5) == [
        (f, s) for f in range(3) for s in range(2)
    ]
    best = json.loads(project.engine("best", "cv-1", "--json").stdout)
    top, _ = best["configs"]
    assert (top["params"], top["n"], top["folds"]) == ({"lr": 0.7}, 6, 3)
    expected = [0.7 + f / 10 + s / 100 for f in range(3) for s in range(2)]
    assert math.isclose(top["mean"], sum(expected) / 6, rel_tol=1e-12)
    assert "over 6 runs (3 folds x 2 seeds)" in project.engine("best", "cv-1").stdout
    rows = project.engine("export", "cv-1", "--runs").stdout.splitlines()
    assert rows[0].split(",")[:4] == ["run", "model", "param_lr", "seed"] and "fold" in rows[0]
    exp.write_text(exp.read_text().replace("folds = 3\n", ""))
    bad = project.engine("validate", str(exp))
    assert bad.returncode == 2 and "cv.toml:2: command: {fold} needs `folds = K`" in bad.stderr


EVAL_TRAIN = """\
import json, os
weight = json.loads(os.environ["RUNYARD_PARAMS"])["w"]
folder = os.environ["RUNYARD_ARTIFACT_DIR"]
os.makedirs(folder, exist_ok=True)
json.dump({"weight": weight}, open(os.path.join(folder, "model.json"), "w"))
print("@runyard", json.dumps({"step": 0, "val_acc": weight}))
"""
EVALUATE = """\
import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
weight = json.load(open(args["--model"]))["weight"]
if args["--split"] == "test" and weight < 0.5:
    raise SystemExit("this model cannot be tested")
print("@runyard", json.dumps({"auc": weight + (0.1 if args["--split"] == "test" else 0.0)}))
"""


def eval_project(project: Project, sweep: str, splits: str, more: str = "", wait: str = "") -> Path:
    """A trainer that saves its model, an evaluator, and experiment `ev` with `sweep` (its
    [sweep] lines) and an each-trial [[evaluate]] step over `splits`, then `more`."""
    (project.folder / "train.py").write_text(wait + EVAL_TRAIN)
    (project.folder / "evaluate.py").write_text(EVALUATE)
    exp = project.folder / "ev.toml"
    exp.write_text(
        f'name = "ev"\ncommand = "{sys.executable} train.py"\n'
        'metric = { name = "val_acc", mode = "max" }\n'
        f'[sweep]\nmethod = "grid"\n{sweep}'
        f'[[evaluate]]\ncommand = "{sys.executable} evaluate.py --model'
        f' {{parent_artifact_dir}}/model.json --split {{split}}"\nsplits = {splits}\n{more}'
    )
    return exp


async def test_evaluation_steps_run_after_training_and_their_metrics_show_on_the_trained_run(
    project: Project,
) -> None:
    """[[evaluate]] on each trial over two splits, and on the best configuration once: the
    evaluations get the trained run's folders, their metrics show on it as split/key, best
    ranks by them, and a failed evaluation leaves its trained run succeeded."""
    exp = eval_project(
        project,
        "seeds = [0, 1]\n[sweep.params]\nw = [0.3, 0.8]\n",
        '["val", "test"]',
        f'[[evaluate]]\nname = "final"\non = "best"\ncommand = "{sys.executable} evaluate.py'
        ' --model {parent_artifact_dir}/model.json --split holdout"\n[smoke]\nw = 0.3\n',
    )
    # A smoke test runs the evaluations too: the weak model's test fails, nothing is queued.
    smoke = project.engine("sweep", str(exp), "--smoke", timeout=120)
    assert smoke.returncode == 1, smoke.stderr
    assert (
        "ok   ev-smoke-1-000-s0 " in smoke.stderr
        and "ok   ev-smoke-1-000-s0-eval-val" in smoke.stderr
    )
    assert "FAIL ev-smoke-1-000-s0-eval-test" in smoke.stderr
    assert "| this model cannot be tested" in smoke.stderr
    dry = project.engine("sweep", str(exp), "--dry-run").stderr
    assert "then evaluate: eval on val and test (each trial), final (the best" in dry, dry
    launched = project.engine("sweep", str(exp), "--wait", timeout=180)
    assert "2 failed" in launched.stderr, launched.stderr  # the two tests of the weak model
    all_runs = json.loads(project.engine("runs", "--json").stdout)
    runs = {r["name"]: r for r in all_runs if r["sweep"] == "ev-1"}
    trained = [r for r in runs.values() if r["parent"] is None]
    assert len(trained) == 4 and all(r["status"] == "succeeded" for r in trained)
    evals = [r for r in runs.values() if r["parent"] is not None]
    assert len(evals) == 4 * 2 + 2  # every trial on val and test; the best's 2 seeds once more
    weak = runs["ev-1-000-s0-eval-test"]
    assert weak["status"] == "failed" and runs["ev-1-000-s0"]["status"] == "succeeded"
    assert sorted(r["name"] for r in evals if r["split"] == "final") == [
        "ev-1-001-s0-final",
        "ev-1-001-s1-final",
    ]
    strong = json.loads(project.engine("show", "ev-1-001-s1", "--json").stdout)
    metrics = {m["key"]: m["last"] for m in strong["details"]["metrics"]}
    assert metrics == {"val_acc": 0.8, "val/auc": 0.8, "test/auc": 0.9, "final/auc": 0.8}
    assert {e["split"] for e in strong["details"]["evaluations"]} == {"val", "test", "final"}
    shown = project.engine("show", "ev-1-001-s1").stdout
    assert "evaluations" in shown and "ev-1-001-s1-eval-test" in shown
    by_test = json.loads(project.engine("best", "ev-1", "--by", "test/auc", "--json").stdout)
    [only] = by_test["configs"]  # the weak model was never tested
    assert only["params"] == {"w": 0.8} and only["n"] == 2 and math.isclose(only["mean"], 0.9)
    best = json.loads(project.engine("best", "ev-1", "--json").stdout)
    assert [c["n"] for c in best["configs"]] == [2, 2]  # evaluation runs are not trials
    # The runs table sorted by family: each trained run, then its evaluations.
    client = await connect(project.config, start=False)
    try:
        page = await client.runs_page("sweep:ev-1", sort="family", descending=False)
    finally:
        await client.close()
    names = [r.name for r in page.runs]
    assert names[:4] == [
        "ev-1-000-s0",
        "ev-1-000-s0-eval-val",
        "ev-1-000-s0-eval-test",
        "ev-1-000-s1",
    ], names
    # The next sweep's estimate counts its evaluations: 4 x 2 splits, and the best's 2 once.
    dry = project.engine("sweep", str(exp), "--dry-run").stderr
    assert "estimate: 4 trials and 10 evaluations ≈ " in dry, dry
    assert "from 12 earlier runs" in dry  # 4 trained, 8 evaluations (not the 2 that failed)


async def test_trained_runs_that_end_while_the_daemon_is_down_are_still_evaluated(
    project: Project,
) -> None:
    """The daemon is killed while the trained runs run; they end meanwhile. The next daemon
    finalises them, queues each one's evaluation once, and puts its metrics on it."""
    exp = eval_project(
        project,
        "[sweep.params]\nw = [0.6, 0.8]\n",
        '["test"]',
        wait="import time; time.sleep(1.5)\n",
    )
    await project.start_daemon()
    client = await connect(project.config, start=False)
    result = await client.sweep(exp, cwd=str(project.folder))
    await wait_until(
        lambda: _all_running(client, [r.id for r in result.runs]), what="both trained runs to run"
    )
    await client.close()
    project.kill_daemon()
    for run in result.runs:  # they end while no daemon watches
        pid = int((project.state_dir / "runs" / str(run.id) / "attempt-1" / "pid").read_text())
        await wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=30)
    await project.start_daemon()
    client = await connect(project.config, start=False)
    try:
        done = await client.wait_sweep("ev-1")
        assert done.counts == {"succeeded": 4}, done.counts  # 2 trained, 2 evaluations
        for run, test_auc in zip(result.runs, (0.7, 0.9), strict=True):
            detail = await client.run(run.id)
            [evaluation] = detail.details["evaluations"]
            assert evaluation["status"] == "succeeded"
            metrics = {m["key"]: m["last"] for m in detail.details["metrics"]}
            assert math.isclose(metrics["test/auc"], test_auc), metrics
    finally:
        await client.close()


async def _all_running(client, ids: list[int]) -> bool:  # type: ignore[no-untyped-def]
    return all([(await client.run(i)).run.status.value == "running" for i in ids])
