"""Study `batch_size`: the smoke study end to end, and its verdict logic on hand-built runs."""

from __future__ import annotations

import json
import math

import numpy as np

from pipeline.studies import batch_size
from pipeline.studies.base import StudyRun
from tests.helpers import run_study

N_TRAIN = 1256
EPOCHS = 10


def fake(batch: int | None, ms_per_step: float, rate: float, noise_scale: float = 60.0, seed: str = "0",
         status: str = "FINISHED") -> StudyRun:
    """A run of EPOCHS epochs: loss 3 exp(-rate step), ms_per_step per step, grad noise noise_scale / B."""
    # logged like the train stage does: every 20 steps and at each epoch end
    per_epoch = 1 if batch is None else math.ceil(N_TRAIN / batch)
    steps = sorted({s for s in range(20, per_epoch * EPOCHS + 1, 20)} | {per_epoch * e for e in range(1, EPOCHS + 1)})
    loss = [(s, 3.0 * math.exp(-rate * s)) for s in steps]
    times = [(s, s * ms_per_step / 1e3) for s in steps]
    history = {"train/loss": loss, "time/train_seconds": times,
               "epoch": [(per_epoch * e, float(e)) for e in range(1, EPOCHS + 1)],
               "lr": [(per_epoch * e, 0.01) for e in range(1, EPOCHS + 1)]}
    if batch is not None:
        history["grad_noise/relative"] = [(s, noise_scale / batch) for s in steps]
    metrics = {k: v[-1][1] for k, v in history.items()}
    metrics.update({"test/acc": 0.9, "val/loss": metrics["train/loss"]})
    value = "null" if batch is None else str(batch)
    return StudyRun(f"train.batch_size={value}", {"train.batch_size": value, "seed": seed}, status, "id",
                    ["healthy"], metrics, history)


def textbook() -> list[StudyRun]:
    """Equal progress per step; step cost flat up to B=16 (overhead), then growing; pure SGD's steps noisier."""
    return [fake(1, 0.1, 0.002), fake(16, 0.1, 0.003), fake(64, 0.3, 0.003), fake(256, 1.0, 0.003),
            fake(None, 4.0, 0.003)]


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("batch_size", tmp_path)
    folder = tmp_path / "reports" / "batch_size"
    assert result["runs"] == 3 and result["failed"] == 0
    for name in ("summary.md", "metrics.json", "batch_size.png"):
        assert (folder / name).is_file()
    summary = (folder / "summary.md").read_text()
    assert "| batch | seed | steps / epoch | final train loss |" in summary
    assert sum(line.startswith("| ") for line in summary.splitlines()) == 1 + 3
    assert "3 runs, 3 finished" in summary
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"] == 3 and metrics["grad_noise/batch_1"] > metrics["grad_noise/batch_64"] > 0


def test_textbook_numbers_support_the_claim():
    rep = batch_size.report(textbook(), None)
    assert rep.supported is True, rep.notes
    assert abs(rep.metrics["grad_noise_slope"] + 1) < 1e-9
    assert "after 10 epochs at lr 0.01" in rep.conclusion and rep.conclusion.endswith("Supported.")
    assert [r["batch"] for r in rep.rows] == ["B=1", "B=16", "B=64", "B=256", "full batch"]
    assert set(rep.figures) == {"batch_size.png"}


def test_cheap_pure_sgd_steps_fail_the_per_second_check():
    runs = textbook()
    runs[0] = fake(1, 0.01, 0.002)  # pure SGD steps ten times cheaper: it wins per second
    rep = batch_size.report(runs, None)
    assert rep.supported is False
    assert "within the same wall time" in rep.conclusion and "a pure-SGD step costs" in rep.conclusion


def test_noise_not_shrinking_like_one_over_b_is_not_supported():
    runs = textbook()
    runs[0] = fake(1, 0.1, 0.002, noise_scale=3.0)  # pure SGD's gradient less noisy than B=16's (3.75)
    rep = batch_size.report(runs, None)
    assert rep.supported is False
    assert "- gradient noise falls with every larger batch: no" in rep.notes


def test_large_batches_ahead_per_epoch_is_not_supported():
    runs = textbook()
    runs[-1] = fake(None, 4.0, 0.5)  # the full batch somehow ends lowest after the same epochs
    rep = batch_size.report(runs, None)
    assert rep.supported is False
    assert any(n.startswith("- smaller batches end lower") and n.endswith(": no") for n in rep.notes)


def test_missing_extremes_are_undecided():
    runs = textbook()
    runs[0].status = "FAILED"
    assert batch_size.report(runs, None).supported is None
    assert batch_size.report(textbook()[1:4], None).supported is None
    assert batch_size.report([], None).supported is None


def test_seeds_and_nan_values_do_not_crash():
    runs = textbook() + [fake(b, c, r, seed="1") for b, c, r in
                         ((1, 0.1, 0.002), (16, 0.1, 0.003), (64, 0.3, 0.003), (256, 1.0, 0.003), (None, 4.0, 0.003))]
    runs[1].history["grad_noise/relative"].append((10_000, math.nan))
    runs[2].history["train/loss"].append((10_000, math.nan))
    rep = batch_size.report(runs, None)
    assert rep.supported is True and len(rep.rows) == 10


def test_loss_within_the_budget_averages_its_last_quarter():
    run = fake(16, 1.0, 0.01)
    steps, loss = run.series("train/loss")
    seconds = steps * 1e-3  # (points,) one ms per step
    window = (seconds >= 0.75 * 0.2) & (seconds <= 0.2)
    expected = float(np.exp(np.mean(np.log(loss[window]))))
    assert math.isclose(batch_size.loss_at_time(run, 0.2), expected)
    assert math.isnan(batch_size.loss_at_time(run, 1e-6))  # before the first logged point
