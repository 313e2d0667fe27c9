"""Study `init_depth`: the smoke study end to end, and the report's checks on hand-built runs."""

import json
import math

import pytest

from pipeline.studies import init_depth as study
from pipeline.studies.base import StudyRun
from tests.helpers import run_study

DEPTH = 30


def fake(activation: str, init: str, factor: float, theory_factor: float | None = None, first: float = 0.5,
         status: str = "FINISHED") -> StudyRun:
    """An init run whose act std changes by `factor` per hidden layer (the theory by `theory_factor`)."""
    theory_factor = factor if theory_factor is None else theory_factor
    metrics = {}
    for i in range(1, DEPTH + 2):  # hidden layers, then the output layer
        key = f"layer_{i:02d}"
        metrics[f"act_std/{key}"] = first * factor ** (i - 1)
        metrics[f"theory_act_var/{key}"] = (first * theory_factor ** (i - 1)) ** 2
        metrics[f"grad_std/{key}"] = 1e-4 / factor ** (DEPTH - i)  # shrinks toward the input when acts do
    return StudyRun(f"{activation} {init}", {"model.activation": activation, "init": init}, status, "id",
                    ["healthy"], metrics if status == "FINISHED" else {})


def textbook() -> list[StudyRun]:
    """The four pairs as the papers describe them."""
    return [fake("tanh", "standard", 0.58), fake("tanh", "xavier_normal", 0.955),
            fake("relu", "xavier_normal", 0.707), fake("relu", "he_normal", 1.0)]


def test_textbook_numbers_support_the_claim():
    result = study.report(textbook(), None)
    assert result.supported is True, result.notes
    assert sum(line.endswith(": yes") for line in result.notes) == 6
    assert result.metrics["act_ratio/relu_xavier"] == pytest.approx(0.707 ** 29)
    assert result.metrics["theory_gap/relu_he"] == pytest.approx(1.0)
    assert len(result.rows) == 4 and "init_depth.png" in result.figures


@pytest.mark.parametrize("index, new, failed", [
    (3, fake("relu", "he_normal", 0.8), "relu + he keeps it"),  # He's init vanishing as well
    (2, fake("relu", "xavier_normal", 0.9), "relu + xavier vanishes"),  # Xavier's ReLU net barely shrinking
    (0, fake("tanh", "standard", 1.0), "tanh + standard shrinks"),  # the standard init keeping tanh's scale
    (1, fake("tanh", "xavier_normal", 0.8), "tanh + xavier keeps"),
    (3, fake("relu", "he_normal", 1.0, theory_factor=0.95), "mean-field prediction"),  # off the theory
])
def test_contrary_numbers_refute_the_claim(index, new, failed):
    runs = textbook()
    runs[index] = new
    result = study.report(runs, None)
    assert result.supported is False
    assert any(failed in line and line.endswith(": no") for line in result.notes), result.notes
    assert "Failed" in result.conclusion


def test_missing_or_failed_pairs_leave_it_undecided():
    runs = textbook()[:3] + [fake("relu", "he_normal", 1.0, status="FAILED")]
    result = study.report(runs, None)
    assert result.supported is None and "Undecided" in result.conclusion
    assert study.report([], None).supported is None


def test_non_finite_values_do_not_crash():
    runs = textbook()
    runs[0].metrics["act_std/layer_30"] = math.inf
    runs[1].metrics = {k: v for k, v in runs[1].metrics.items() if not k.startswith("theory")}  # not predicted
    result = study.report(runs, None)
    assert result.supported is None  # no ratio for tanh + standard, no theory comparison for tanh + xavier


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("init_depth", tmp_path)
    folder = tmp_path / "reports" / "init_depth"
    assert result["runs"] == 4 and result["failed"] == 0
    assert (folder / "init_depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"] == 4 and metrics["finished"] == 4
    assert metrics["theory_gap/relu_he"] < 2  # even 6 x 32 follows the mean-field line
    # but 6 layers are too few for the depth-30 thresholds: relu + xavier loses only ~0.7^5 of its scale
    assert metrics["supported"] == 0 and metrics["act_ratio/relu_xavier"] > 1e-3
    summary = (folder / "summary.md").read_text()
    assert "| activation | init | seed | depth | act std L1 |" in summary
    for pair in ("| tanh | standard | 0 | 6 |", "| tanh | xavier_normal | 0 | 6 |", "| relu | xavier_normal | 0 | 6 |",
                 "| relu | he_normal | 0 | 6 |"):
        assert pair in summary
