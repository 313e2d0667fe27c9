"""Study `learning_rate`: the smoke study end to end, and its verdict logic on hand-built runs."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.studies import learning_rate
from pipeline.studies.base import StudyRun
from tests.helpers import run_study


def fake(lr: float, losses: list[float], dead: float = 0.0, diverged_at: int | None = None,
         status: str = "FINISHED") -> StudyRun:
    """A train run at `lr` whose train/loss was logged every 20 steps; diverged when `diverged_at` is set."""
    loss_hist = [(20 * (i + 1), v) for i, v in enumerate(losses)]
    dead_hist = [(s, dead) for s, _ in loss_hist]
    metrics = {"dead_relu/total": dead} if loss_hist else {}
    if loss_hist:
        metrics["train/loss"] = losses[-1]
    if diverged_at is None:
        metrics.update({"test/acc": 0.9, "val/acc": 0.9})
    else:
        metrics["diverged_at_step"] = float(diverged_at)
    return StudyRun(f"optimizer.lr={lr:g}", {"optimizer.lr": str(lr)}, status, "id",
                    ["diverged"] if diverged_at is not None else ["healthy"], metrics,
                    {"train/loss": loss_hist, "dead_relu/total": dead_hist})


def textbook() -> list[StudyRun]:
    """Crawl at 1e-4, convergence at 0.1 and 1, dead ReLUs at 3, NaN at 10."""
    return [fake(1e-4, [3.0, 2.98, 2.96]), fake(1e-2, [2.5, 1.5, 0.8]), fake(0.1, [1.5, 0.3, 0.05]),
            fake(1.0, [1.2, 0.1, 0.01], dead=0.05), fake(3.0, [3.5, 2.4, 2.3], dead=0.49),
            fake(10.0, [], diverged_at=7)]


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("learning_rate", tmp_path)
    folder = tmp_path / "reports" / "learning_rate"
    assert result["runs"] == 3 and result["failed"] == 0
    for name in ("summary.md", "metrics.json", "learning_rate.png"):
        assert (folder / name).is_file()
    summary = (folder / "summary.md").read_text()
    assert "| lr | seed | final train loss |" in summary
    assert sum(line.startswith("| ") for line in summary.splitlines()) == 1 + 3  # header + one row per lr
    assert "3 runs, 3 finished" in summary
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"] == 3 and "final_loss/lr_0.0001" in metrics


def test_textbook_numbers_support_the_claim():
    rep = learning_rate.report(textbook(), None)
    assert rep.supported is True
    assert rep.metrics["best_lr"] == 1.0
    assert "lr 10 diverge" in rep.conclusion and "3" in rep.conclusion
    regimes = [r["regime"] for r in rep.rows]
    assert regimes == ["crawl", "partial", "converged", "converged", "dead", "diverged"]
    assert all(n.endswith(": yes") for n in rep.notes if n.startswith("- the") or n.startswith("- an"))
    assert set(rep.figures) == {"learning_rate.png"}


def test_dead_relus_without_divergence_also_count():
    runs = textbook()[:-1]  # the largest lr is now 3: it kills half the ReLUs but never goes NaN
    assert learning_rate.report(runs, None).supported is True


def test_largest_lr_converging_is_not_supported():
    runs = textbook()[:4]  # the largest lr (1) converges best: nothing too large was tried
    rep = learning_rate.report(runs, None)
    assert rep.supported is False
    assert "Not supported" in rep.conclusion and "largest lr (1)" in rep.conclusion


def test_smallest_lr_that_already_converges_is_not_supported():
    runs = [fake(1e-4, [2.0, 0.5, 0.2])] + textbook()[1:]
    rep = learning_rate.report(runs, None)
    assert rep.supported is False
    assert "- the smallest lr (0.0001) crawls: loss drops < 25%: no" in rep.notes


def test_too_few_or_failed_runs_are_undecided():
    runs = textbook()
    for r in runs[1:]:
        r.status = "FAILED"
    assert learning_rate.report(runs, None).supported is None
    assert learning_rate.report([], None).supported is None


def test_nan_losses_and_seeds_do_not_crash():
    runs = textbook()
    seeded = [StudyRun(r.label + " seed=1", {**r.values, "seed": "1"}, r.status, r.run_id, r.verdict, r.metrics,
                       r.history) for r in runs]
    runs[2].history["train/loss"].append((80, math.nan))
    runs[2].metrics["dead_relu/total"] = math.nan
    rep = learning_rate.report(runs + seeded, None)
    assert rep.supported is True and len(rep.rows) == 12


@pytest.mark.parametrize("drop, expected", [(0.1, "crawl"), (0.5, "partial"), (0.95, "converged")])
def test_regime_thresholds(drop, expected):
    p = learning_rate.Point(0.1, 1 - drop, drop, 0.0, False, math.nan)
    assert learning_rate.regime(p, 0.0) == expected


def test_divergence_without_a_logged_step_does_not_crash():
    runs = textbook()
    del runs[-1].metrics["diverged_at_step"]
    rep = learning_rate.report(runs, None)
    assert rep.supported is True and "(NaN)" in rep.conclusion
    assert rep.rows[-1]["diverged at step"] is None
