"""DVC: params.yaml in sync with conf/, and a tiny pipeline through dvc repro in a temporary repository."""

import sys
from pathlib import Path

import pytest
import yaml

from pipeline import params
from pipeline.harness.paths import ROOT, project_root
from tests.helpers import DVC, git_dvc_init, must, tiny_project


def test_params_yaml_matches_conf():
    """plain `dvc repro` reads params.yaml: it must be conf/ composed (make params regenerates it)."""
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == params.composed()


def test_experiment_copies_log_to_the_real_project():
    assert project_root(Path("/home/u/proj/.dvc/tmp/exps/tmpab12/")) == Path("/home/u/proj")
    assert project_root(Path("/home/u/proj")) == Path("/home/u/proj")


TINY_DVC = """
stages:
  prepare:
    cmd: {py} -m pipeline.prepare --config-dir . --config-name params
    deps: [pipeline/prepare.py]
    params: [data]
    outs: [data/prepared]
  train:
    cmd: {py} -m pipeline.train --config-dir . --config-name params export=reports/train_run
    deps: [data/prepared, pipeline/train.py]
    params: [seed, model, train]
    outs: [reports/train_run/loss_curves.png]
    metrics: [reports/train_run/metrics.json]
    plots: [reports/train_run/loss.csv]
"""


@pytest.mark.slow
@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")
def test_tiny_pipeline_repro_is_then_up_to_date_and_exp_run_composes(tmp_path):
    repo = tmp_path / "repo"
    tiny_project(repo)
    (repo / "dvc.yaml").write_text(TINY_DVC.format(py=sys.executable))
    (repo / ".gitignore").write_text("/data/\n/reports/\n/outputs/\n__pycache__/\n")
    git_dvc_init(repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["data"]["name"] == "xor"

    out = must([str(DVC), "repro"], repo)
    assert "Running stage 'train'" in out
    assert (repo / "reports" / "train_run" / "metrics.json").exists()
    must(["git", "add", "-A"], repo)
    must(["git", "commit", "-qm", "tiny pipeline"], repo)
    assert "up to date" in must([str(DVC), "repro"], repo).lower()

    must([str(DVC), "exp", "run", "-S", "model.depth=1"], repo)  # composes params.yaml from conf/ + override
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["depth"] == 1
    shown = must([str(DVC), "exp", "show", "--csv"], repo)
    assert "model.depth" in shown and "test/acc" in shown
