"""Results from a store filled by real runs of the example trainers: seed statistics checked
against SciPy, exports (CSV, Parquet, LaTeX) and read-only SQL."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scipy import stats

from engine.client import Client

from .conftest import Project

TRAINERS = Path(__file__).resolve().parent.parent / "experiments" / "trainers"
EXPERIMENT = f"""\
name = "glm_bc"
command = "{sys.executable} {TRAINERS / "sk_baselines.py"} --model glm --dataset breast_cancer --C {{C}} --seed {{seed}}"
model_type = "GLM"
metric = {{ name = "val_auc", mode = "max" }}
[sweep]
method = "grid"
seeds = [0, 1, 2, 3]
[sweep.params]
C = [0.01, 1.0]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:  # type: ignore[no-untyped-def]
    """One real sweep of the GLM baseline (2 configurations × 4 seeds), and what the CLI says
    of it; the daemon is stopped afterwards."""
    import asyncio
    import tempfile

    from engine.client import connect

    from .conftest import HOSTS

    async def run() -> dict:
        with tempfile.TemporaryDirectory(prefix="ry-") as folder:
            project = Project(Path(folder), HOSTS.format(max_jobs=2))
            exp = project.folder / "glm.toml"
            exp.write_text(EXPERIMENT)
            await project.start_daemon()
            client: Client = await connect(project.config, start=False)
            try:
                plan = await client.sweep(exp, cwd=str(project.folder))
                await asyncio.wait_for(client.wait_sweep(plan.sweep), 120)
                out = {"best": await client.best(plan.sweep, runs=True), "sweep": plan.sweep}
                out["cli_best"] = project.engine("best", plan.sweep).stdout
                for fmt in ("csv", "latex"):
                    out[fmt] = project.engine("export", plan.sweep, "--format", fmt).stdout
                out["runs_csv"] = project.engine("export", plan.sweep, "--runs").stdout
                parquet = project.folder / "out.parquet"
                done = project.engine(
                    "export", plan.sweep, "--format", "parquet", "--out", str(parquet)
                )
                assert done.returncode == 0, done.stderr
                out["parquet"] = pq.read_table(parquet).to_pylist()
                report = project.folder / "report"
                made = project.engine("report", plan.sweep, "--out", str(report))
                assert made.returncode == 0, made.stderr
                out["report"] = report
                out["report_files"] = {p.name: p.stat().st_size for p in report.iterdir()}
                out["index"] = (report / "index.md").read_text()
                out["compare"] = project.engine("compare", "--sweep", plan.sweep, "--json")
                out["sql"] = [
                    project.engine("sql", q, "--json")
                    for q in (
                        "SELECT count(*) AS n, min(duration_s) > 0 AS timed FROM runs_v WHERE status = 'succeeded'",
                        "SELECT name, count(DISTINCT value) AS values FROM params_v GROUP BY name",
                        "SELECT key, count(*) AS points FROM metrics_v WHERE key = 'val_auc' GROUP BY key",
                        "INSERT INTO runs (id) VALUES (999)",
                        "DROP VIEW runs_v",
                        "SELECT 1; DELETE FROM runs",
                        "SELECT count(*) AS n FROM runs_v",
                        "SELECT env FROM runs",
                        "SELECT * FROM read_csv_auto('/etc/passwd')",
                        "SELECT * FROM '/etc/passwd'",
                        "WITH runs AS (SELECT * FROM runs) SELECT env FROM runs",
                    )
                ]
                return out
            finally:
                await client.close()
                project.cleanup()

    return asyncio.run(run())  # the report folder is gone with the project: sizes are kept


def test_seed_statistics_agree_with_scipy(results: dict) -> None:
    best = results["best"]
    configs = best["configs"]
    assert [c["n"] for c in configs] == [4, 4] and best["metric"] == "val_auc"
    for c in configs:
        low, high = stats.t.interval(
            0.95, len(c["values"]) - 1, loc=c["mean"], scale=stats.sem(c["values"])
        )
        # an AUC's interval is cut at 1, and says so
        assert c["ci95"] == pytest.approx([max(low, 0), min(high, 1)])
        assert c["ci95_clipped"] == (high > 1 or low < 0)
        assert c["std"] == pytest.approx(stats.tstd(c["values"]))
    welch = stats.ttest_ind(
        configs[0]["values"], configs[1]["values"], equal_var=False, alternative="greater"
    )
    assert best["best_vs_runner_up"]["t"] == pytest.approx(welch.statistic)
    assert best["best_vs_runner_up"]["p"] == pytest.approx(welch.pvalue)
    assert "95% CI [" in results["cli_best"] and "Welch t = " in results["cli_best"]


def test_exports_have_one_row_per_configuration_or_run(results: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(results["csv"])))
    assert len(rows) == 2 and {r["param_C"] for r in rows} == {"0.01", "1.0"}
    assert (
        float(rows[0]["val_auc_ci95_low"])
        <= float(rows[0]["val_auc_mean"])
        <= float(rows[0]["val_auc_ci95_high"])
    )
    runs = list(csv.DictReader(io.StringIO(results["runs_csv"])))
    assert len(runs) == 8 and {r["seed"] for r in runs} == {"0", "1", "2", "3"}
    assert [r["param_C"] for r in results["parquet"]] == [float(r["param_C"]) for r in rows]


def test_the_latex_table_is_booktabs_with_the_best_in_bold(results: dict) -> None:
    tex = results["latex"]
    assert tex.count("{") == tex.count("}")
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert "val\\_auc" in tex and "val_auc" not in tex.replace("val\\_auc", "")
    assert tex.count("\\mathbf{") == 1 and tex.count("\\pm") == 2
    caption = f"{results['sweep'].replace('_', chr(92) + '_')}: val\\_auc (last value of each run)"
    assert f"\\caption{{{caption}}}" in tex


def test_sql_reads_the_views_and_refuses_writes(results: dict) -> None:
    count, params, points, insert, drop, two, after, *hostile = results["sql"]
    assert json.loads(count.stdout) == [{"n": 8, "timed": True}]
    assert json.loads(params.stdout) == [{"name": "C", "values": 2}]
    assert json.loads(points.stdout) == [{"key": "val_auc", "points": 8}]
    for refused, why in ((insert, "only SELECT"), (drop, "only SELECT"), (two, "exactly one")):
        assert refused.returncode == 1 and why in refused.stderr, refused.stderr
    assert json.loads(after.stdout) == [{"n": 8}]  # the refused statements changed nothing
    table, csv_file, path, shadow = hostile  # nothing but the views: no env, no files
    assert table.returncode == 1 and "'runs' is not one of the views" in table.stderr
    assert csv_file.returncode == 1 and "table functions" in csv_file.stderr
    assert path.returncode == 1 and "'/etc/passwd' is not one of the views" in path.stderr
    assert shadow.returncode == 1 and "may not be a table's name: runs" in shadow.stderr


def test_the_report_has_exports_plots_and_an_index(results: dict) -> None:
    files = results["report_files"]
    for name in ("configs.csv", "runs.csv", "configs.parquet", "table.tex", "index.md"):
        assert files.get(name, 0) > 0, name
    # PNGs that are real plots: the GLM saved predictions, so ROC and calibration exist too
    for name in ("val_auc_vs_C", "roc", "calibration"):
        assert files.get(f"{name}.png", 0) > 10_000, (name, files)
        assert files.get(f"{name}.pdf", 0) > 5_000 and files.get(f"{name}.svg", 0) > 5_000
    assert "curves.png" not in files  # the GLM prints one value per run: there is no curve
    index = results["index"]
    assert "![roc](roc.png)" in index and "Welch" in index and "95% CI" in index
    assert "[PDF](roc.pdf) · [SVG](roc.svg)" in index
    assert index.split("\n## ")[0].count("| GLM C=") == 2  # the table, before any section
    assert "(max, the last value of each run)" in index
    clipped = [c for c in results["best"]["configs"] if c["ci95_clipped"]]
    assert index.count("(cut at the metric's bound)") == len(clipped)


def test_compare_lists_the_runs_and_what_differs(results: dict) -> None:
    compared = json.loads(results["compare"].stdout)
    assert len(compared["runs"]) == 8
    [c] = [p for p in compared["params"] if p["name"] == "C"]
    assert c["differs"] and set(c["values"]) == {0.01, 1.0}
    [auc] = [m for m in compared["metrics"] if m["key"] == "val_auc"]
    assert all(r is not None and r["count"] == 1 for r in auc["runs"])
