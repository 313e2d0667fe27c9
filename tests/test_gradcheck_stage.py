"""python -m pipeline.gradcheck as a user runs it, and its sweep over every combination."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from pipeline import gradcheck
from pipeline.engine.activations import Sigmoid
from pipeline.harness.paths import CONF_DIR, ROOT


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("gradcheck", overrides=list(overrides))


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.gradcheck", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_passes_and_prints_one_line_per_tensor():
    proc = cli("model.activation=tanh", "model.batch_norm=true", "regularizer=l1", "regularizer.strength=0.1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    # depth 3: three hidden layers (W, gamma, beta: BN replaces the bias) and the output (W, b)
    assert len(lines) == 3 * 3 + 2 + 1
    assert lines[-1].startswith("max_rel_error=")
    assert float(lines[-1].split("=")[1]) < 1e-6


def test_cli_fails_at_an_impossible_tolerance():
    proc = cli("gradcheck.tol=1e-30")
    assert proc.returncode == 1
    assert "FAILED: max_rel_error" in proc.stderr


@pytest.mark.slow
def test_every_combination_passes_at_depth_3():
    result = gradcheck.run(config("model.depth=3", "gradcheck.sweep=true"))
    assert len(result["combinations"]) == 6 * 3 * 4 * 2 * 2
    assert result["failed"] == []
    assert result["max_rel_error"] < 1e-6


def test_a_wrong_derivative_fails_the_stage(monkeypatch):
    monkeypatch.setattr(Sigmoid, "grad", lambda self, z, a=None: a * (1.0 - a) * 1.01)
    result = gradcheck.run(config("model.activation=sigmoid"))
    assert not result["passed"]
    assert result["max_rel_error"] > 1e-3


@pytest.mark.parametrize("init", ["he_normal", "orthogonal", "standard"])
def test_config_names_match_design(init):
    cfg = config(f"init={init}", "model.depth=2", "model.width=5", "regularizer=elastic")
    for key in ("depth", "width", "activation", "batch_norm", "residual", "loss"):
        assert key in cfg.model
    assert {"tol"} <= set(cfg.gradcheck) and "strength" in cfg.regularizer
    assert gradcheck.run(cfg)["passed"]


def test_the_autoencoders_of_pretraining_pass_and_a_wrong_derivative_fails_them(monkeypatch):
    result = gradcheck.run(config("gradcheck.autoencoder=true"))
    assert len(result["combinations"]) == 6 * 2 * 2 and result["passed"] and result["max_rel_error"] < 1e-8
    monkeypatch.setattr(Sigmoid, "grad", lambda self, z, a=None: a * (1.0 - a) * 1.01)
    result = gradcheck.run(config("gradcheck.autoencoder=true"))
    assert not result["passed"] and all(label.startswith("autoencoder sigmoid") for label in result["failed"])
