"""A sweep's report as a thesis needs it, through the real daemon and CLI: vector figures that
open, log axes for a log-sampled param, failed runs drawn faded and counted, models with their
own step units in panels of their own, importance from few trials marked unreliable, a
resources section whose speedup is the runs' own, a reproducibility section, one PDF."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.results.plots import Figures, config_label, plot_against_params, plot_curves

from .conftest import Project

TRAIN = """\
import json, os, sys, time
params = json.loads(os.environ["RUNYARD_PARAMS"])
steps = int(sys.argv[1])
for step in range(steps):
    auc = 0.7 + 0.02 * params["depth"] - abs(params["lr"] - 0.01) + step / (100 * steps)
    print("@runyard", json.dumps({"step": step, "auc": auc}), flush=True)
    time.sleep(0.01)
sys.exit(1 if params["depth"] == 4 and sys.argv[2] == "boost" else 0)
"""
EXPERIMENT = """\
name = "thesis"
metric = {{ name = "auc", mode = "max" }}
[[models]]
name = "net"
model_type = "MLP"
command = "{python} train.py 5 net"
[[models]]
name = "boost"
model_type = "GBM"
command = "{python} train.py 40 boost"
[sweep]
method = "random"
trials = 3
seeds = [0, 1]
sampler_seed = 11
[sweep.params]
lr = {{ low = 0.0001, high = 0.1, log = true }}
depth = [2, 4]
"""


def _pdf_pages(path: Path) -> int:
    """The PDF's page count, as poppler's pdfinfo reads it (the file opens)."""
    if shutil.which("pdfinfo") is None:
        if os.environ.get("CI"):  # CI installs it: a missing reader there is a failure
            pytest.fail("pdfinfo (poppler-utils) is not installed")
        pytest.skip("pdfinfo (poppler-utils) is not installed")
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    return int(re.search(r"^Pages:\s+(\d+)$", info.stdout, re.M).group(1))  # type: ignore[union-attr]


def test_the_report_is_fit_for_a_thesis(project: Project) -> None:
    (project.folder / "train.py").write_text(TRAIN)
    exp = project.folder / "thesis.toml"
    exp.write_text(EXPERIMENT.format(python=sys.executable))
    done = project.engine("sweep", str(exp), "--wait", timeout=180)
    assert done.returncode == 1  # the boosted trees with depth 4 fail
    runs = json.loads(project.engine("runs", "--sweep", "thesis-1", "--json").stdout)
    failed = [r for r in runs if r["status"] == "failed"]
    assert failed and len(failed) < len(runs)

    out = project.folder / "report"
    made = project.engine("report", "thesis-1", "--out", str(out), "--pdf", timeout=180)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(out / "report.pdf")
    index = (out / "index.md").read_text()

    # Every figure in three formats; the PDFs and SVGs open.
    pngs = sorted(out.glob("*.png"))
    assert {p.stem for p in pngs} >= {
        "curves",
        "auc_vs_lr",
        "auc_vs_depth",
        "importance",
        "utilisation",
    }
    for png in pngs:
        assert _pdf_pages(png.with_suffix(".pdf")) == 1
        assert ET.parse(png.with_suffix(".svg")).getroot().tag.endswith("svg")
        assert f"[PDF]({png.stem}.pdf) · [SVG]({png.stem}.svg)" in index
    # The whole report in one PDF: the text's pages, then a page per figure.
    assert _pdf_pages(out / "report.pdf") > len(pngs)

    # A log-sampled param on a log axis; failed runs counted, and drawn faded.
    assert "x on a log scale (the parameter was sampled log-uniformly)" in index
    assert f"{len(failed)} failed runs are not in these statistics" in index
    assert f"{len(failed)} failed runs in the sweep" in index
    # Two models that count steps differently: a panel each. Few configurations: unreliable.
    assert "one panel per model" in index
    assert "unreliable, as it rests on fewer than 10" in index

    # Resources: the speedup is the runs' own time over the sweep's wall time.
    timed = [r for r in runs if r["started_at"] and r["ended_at"]]
    busy = sum(r["ended_at"] - r["started_at"] for r in timed)
    wall = max(r["ended_at"] for r in timed) - min(r["started_at"] for r in timed)
    assert (
        f"a parallel speedup of **{busy / wall:.2f}** (run time over wall time) on 4 slots" in index
    )
    assert "| configuration | runs | run hours | CPU-hours | GPU-hours |" in index
    assert re.search(r"^\| local \| \d+ \| [\d.]+ \| [\d.]+ \| - \|$", index, re.M), index
    # Reproducibility: what made the runs in the table, and their seeds.
    section = index.split("## Reproducibility")[1].split("\n## ")[0]
    python = ".".join(map(str, sys.version_info[:3]))
    assert f"| {python} |" in section and "| 0, 1 |" in section


def test_figures_draw_log_axes_panels_faded_runs_and_rounded_legends(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    configs = [
        {
            "model_type": "MLP",
            "params": {"lr": 0.000123456, "depth": 2},
            "values": [0.8, 0.81],
            "runs": [1, 2],
        },
        {
            "model_type": "GBM",
            "params": {"lr": 0.0456789, "depth": 4},
            "values": [0.7],
            "runs": [3],
        },
    ]
    faded = [
        {
            "id": 4,
            "status": "pruned",
            "model_type": "GBM",
            "params": {"lr": 0.09, "depth": 2},
            "value": 0.5,
        }
    ]
    curves = {
        run: [{"key": "auc", "step": s, "value": 0.5 + s / 100} for s in range(steps)]
        for run, steps in ((1, 5), (2, 5), (3, 40), (4, 10))
    }
    assert config_label(configs[0]) == "MLP lr=0.000123 depth=2"
    figures = Figures(tmp_path, keep=True)
    plot_curves(figures, configs, curves, "auc", faded)
    plot_against_params(figures, configs, "auc", log_params=["lr"], faded=faded)
    curves_fig, depth_fig, lr_fig = figures.kept
    assert [ax.get_title() for ax in curves_fig.axes] == ["GBM", "MLP"]  # a panel per model
    gbm = curves_fig.axes[0]
    assert any(line.get_alpha() == 0.25 for line in gbm.get_lines())  # the pruned run, faded
    assert [t.get_text() for t in gbm.get_legend().get_texts()] == ["GBM lr=0.0457 depth=4"]
    assert lr_fig.axes[0].get_xscale() == "log" and depth_fig.axes[0].get_xscale() == "linear"
    assert figures.made[2].caption.endswith("1 pruned run, 1 drawn faded (x) at their last value.")
