"""Study `batch_size`: its checks on hand-built runs (controlled step times given, not measured), the controlled
timing helper, and the smoke study end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.harness.validate import ConfigError
from pipeline.studies import batch_size, timing
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from tests.helpers import config, run_study

N_TRAIN = 1257
EPOCHS = 10
SEEDS = ("0", "1", "2")
BATCHES = (1, 16, 64, 256, None)
STEP_US = {1: 60.0, 16: 70.0, 64: 130.0, 256: 400.0, None: 1800.0}  # overhead-bound small steps, as measured
RATE = {1: 0.002, 16: 0.002, 64: 0.002, 256: 0.002, None: 0.002}  # loss 3 exp(-rate step): same progress per step
JITTER = (1.0, 1.06, 0.95)  # per seed, on the rate: a seed spread


@pytest.fixture(scope="module")
def cfg():
    return config("study=batch_size", hydra=True)


def fake(
    batch: int | None,
    seed: str,
    rate: float,
    noise_scale: float = 60.0,
    noise_power: float = 1.0,
    status: str = "FINISHED",
) -> StudyRun:
    """A run logged like the train stage (every 20 steps and at epoch ends): loss 3 exp(-rate step), grad noise
    noise_scale / B^noise_power."""
    per_epoch = 1 if batch is None else math.ceil(N_TRAIN / batch)
    steps = sorted(set(range(20, per_epoch * EPOCHS + 1, 20)) | {per_epoch * e for e in range(1, EPOCHS + 1)})
    history = {
        "train/loss": [(s, 3.0 * math.exp(-rate * s)) for s in steps],
        "epoch": [(per_epoch * e, float(e)) for e in range(1, EPOCHS + 1)],
    }
    if batch is not None:
        history["grad_noise/relative"] = [(s, noise_scale / batch**noise_power) for s in steps]
    metrics = {k: v[-1][1] for k, v in history.items()}
    metrics.update({"test/acc": 0.9, "val/loss": metrics["train/loss"]})
    value = "null" if batch is None else str(batch)
    history = history if status == "FINISHED" else {}
    return StudyRun(
        f"train.batch_size={value} seed={seed}",
        {"train.batch_size": value, "seed": seed},
        status,
        "id",
        ["healthy"],
        metrics,
        history,
    )


def world(rate: dict | None = None, step_us: dict | None = None, **kw) -> tuple[list[StudyRun], dict]:
    """Every batch size on every seed, and the step times the report would have measured."""
    rate, step_us = {**RATE, **(rate or {})}, {**STEP_US, **(step_us or {})}
    runs = [fake(b, s, rate[b] * j, **kw.get(str(b), {})) for b in BATCHES for s, j in zip(SEEDS, JITTER)]
    times = {(math.inf if b is None else float(b), s): 1e-6 * step_us[b] for b in BATCHES for s in SEEDS}
    return runs, times


def decide(monkeypatch, cfg, runs, times):
    monkeypatch.setattr(batch_size, "controlled_step_seconds", lambda runs, cfg: times)
    return batch_size.findings(runs, cfg)


def outcomes(found) -> list[str]:
    return [c.outcome for c in found.checks]


def test_textbook_numbers_hold_every_check(monkeypatch, cfg):
    found = decide(monkeypatch, cfg, *world())
    assert outcomes(found) == [HOLDS] * 6, [(c.name, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED
    assert found.metrics["grad_noise_slope"] == pytest.approx(-1.0)
    # the budget is the full batch's 10 steps; pure SGD gets more steps than B=16 in it: better, not just a tie
    assert found.metrics["budget_ms"] == pytest.approx(10 * 1.8)
    assert "better on every seed" in found.checks[-1].why
    assert [r["batch"] for r in found.rows] == ["B=1", "B=16", "B=64", "B=256", "full batch"]
    assert len(found.series["runs.csv"]) == 15 and set(found.figures) == {"batch_size.png"}


def test_pure_sgd_tied_with_the_best_mini_batch_keeps_pace(monkeypatch, cfg):
    # per step pure SGD is a little faster on seeds 1, 2 and slower on seed 0 than its step-time edge: a tie
    runs, times = world()
    runs = [r for r in runs if batch_size.batch_of(r) != 1]
    runs += [fake(1, s, 0.002 * f) for s, f in zip(SEEDS, (0.80, 1.0, 0.98))]
    found = decide(monkeypatch, cfg, runs, times)
    check = found.checks[-1]
    assert check.outcome == HOLDS and check.why.startswith("tie:")


def test_pure_sgd_with_dear_steps_fails_to_keep_pace(monkeypatch, cfg):
    # a pure-SGD step ten times dearer than a B=16 step: it falls behind per unit of compute
    found = decide(monkeypatch, cfg, *world(step_us={1: 700.0}))
    assert outcomes(found)[-1] == FAILS and outcomes(found)[:-1] == [HOLDS] * 5
    assert verdict(found.checks).verdict == PARTLY


def test_a_full_batch_ahead_per_epoch_fails_the_epoch_and_compute_checks(monkeypatch, cfg):
    found = decide(monkeypatch, cfg, *world(rate={None: 0.5}))
    assert outcomes(found)[0] == FAILS  # rank correlation of B and final loss is negative
    assert outcomes(found)[4] == FAILS  # the full batch is ahead per unit of compute too


def test_noise_falling_as_one_over_sqrt_b_fails_the_slope_check(monkeypatch, cfg):
    kw = {str(b): {"noise_power": 0.5} for b in BATCHES if b is not None}
    found = decide(monkeypatch, cfg, *world(**kw))
    assert outcomes(found)[1] == HOLDS and outcomes(found)[2] == FAILS


def test_cheap_epochs_for_pure_sgd_fail_the_epoch_cost_check(monkeypatch, cfg):
    # a pure-SGD step 100x cheaper than B=16's: its epoch is no dearer than the others'
    found = decide(monkeypatch, cfg, *world(step_us={1: 0.7}))
    assert outcomes(found)[3] == FAILS


def test_a_missing_run_leaves_its_checks_undecided(monkeypatch, cfg):
    runs, times = world()
    runs = [
        r if not (batch_size.batch_of(r) == 64 and r.seed == "1") else fake(64, "1", 0.002, status="FAILED")
        for r in runs
    ]
    found = decide(monkeypatch, cfg, runs, times)
    assert outcomes(found)[:4] == [UNDECIDED] * 4
    assert found.checks[0].why == "runs missing: seed 1"
    # no pure SGD at all: its comparisons cannot be measured
    runs, times = world()
    found = decide(monkeypatch, cfg, [r for r in runs if batch_size.batch_of(r) != 1], times)
    assert outcomes(found)[3:] == [UNDECIDED] * 3 and "no pure SGD" in found.checks[-1].why


def test_loss_at_the_budget_averages_its_last_quarter():
    run = fake(16, "0", 0.01)
    times = {(16.0, "0"): 1e-3}  # one ms per step
    steps, loss = run.series("train/loss")
    inside = (steps * 1e-3 >= 0.75 * 0.2) & (steps * 1e-3 <= 0.2)
    assert math.isclose(batch_size.loss_at(run, 0.2, times, 0.75), float(np.exp(np.mean(np.log(loss[inside])))))
    assert math.isnan(batch_size.loss_at(run, 1e-6, times, 0.75))  # before the first logged point


def test_best_of_interleaved_times_each_call_and_resets_before_every_sample():
    resets = {"small": 0, "large": 0}
    small, large = np.ones(1000), np.ones(100_000)
    fns = {"small": lambda: small.sum(), "large": lambda: large.sum()}
    reset = {k: (lambda k=k: resets.__setitem__(k, resets[k] + 1)) for k in fns}
    best = timing.best_of_interleaved(fns, timing.Timing(repeats=15, sample_seconds=0.0005), reset)
    assert 0 < best["small"] < best["large"]
    assert resets == {"small": 16, "large": 16}  # one before calibrating, one before each of the 15 samples


def test_timing_settings_come_from_the_yaml_and_refuse_few_repeats(cfg):
    assert timing.settings(cfg) == timing.Timing(15, 0.002, 1)
    with pytest.raises(ConfigError, match="repeats >= 15"):
        timing.settings(OmegaConf.create({"study": {"timing": {"repeats": 7}}}))


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("batch_size", tmp_path)
    folder = tmp_path / "reports" / "batch_size"
    assert result["runs"] == 3 and result["failed"] == 0  # full batch, B=64, pure SGD; one seed, one epoch
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] in ("supported", "partly supported", "not supported", "undecided")
    names = [c["name"] for c in summary["checks"]]
    assert len(names) == 6 and names[0].startswith("smaller batches end lower")
    assert all(c["outcome"] in (HOLDS, FAILS, UNDECIDED) for c in summary["checks"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["controlled_step_us/batch_1"] > 0 and metrics["controlled_step_us/batch_full"] > 0
    assert metrics["grad_noise/batch_1"] > metrics["grad_noise/batch_64"] > 0
    for name in ("summary.md", "batch_size.png", "runs.csv"):
        assert (folder / name).is_file()


def test_check_names_do_not_carry_the_measured_times(monkeypatch, cfg):
    """benchmarks/stability.py compares checks by name across runs: a budget in the name made equal outcomes
    look like different checks."""
    runs, times = world()
    names = [c.name for c in decide(monkeypatch, cfg, runs, times).checks]
    slower = {k: 1.07 * v for k, v in times.items()}  # the same machine, another moment
    again = decide(monkeypatch, cfg, runs, slower).checks
    assert [c.name for c in again] == names and [c.outcome for c in again] == outcomes(
        decide(monkeypatch, cfg, runs, times)
    )
