"""Study `activations`: its checks on hand-built runs (controlled costs given, not measured), and the smoke study
end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.studies import activations
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, NOT_SUPPORTED, PARTLY, SUPPORTED, UNDECIDED, verdict
from tests.helpers import config, run_study

SEEDS = ("0", "1", "2")
EPOCHS = 10
LAYERS = 6  # 5 hidden layers and the output layer
# per activation: (first/last gradient ratio, hidden mean activation, test acc, epoch val acc first >= 0.9)
TEXTBOOK = {
    "sigmoid": (2.5e-3, 0.50, 0.10, None),
    "tanh": (2.5, 0.0, 0.96, 2),
    "relu": (1.1, 0.87, 0.94, 5),
    "leaky_relu": (1.1, 0.86, 0.94, 4),
    "elu": (1.8, 0.29, 0.96, 2),
}
JITTER = (1.0, 1.1, 0.92)  # per seed, on the gradient ratio and the mean activation


@pytest.fixture(scope="module")
def cfg():
    return config("study=activations", hydra=True)


@pytest.fixture(autouse=True)
def costs(monkeypatch):
    """The report's controlled costs, fabricated: timing is not what these tests check."""
    table = {
        "activation": {"sigmoid": 15e-6, "tanh": 4e-6, "relu": 20e-6, "leaky_relu": 36e-6, "elu": 39e-6},
        "step": {"sigmoid": 240e-6, "tanh": 175e-6, "relu": 270e-6, "leaky_relu": 370e-6, "elu": 370e-6},
    }
    monkeypatch.setattr(activations, "controlled_costs", lambda runs, cfg: table)
    return table


def fake(
    name: str,
    seed: str,
    ratio: float,
    mean: float,
    acc: float,
    hits: int | None,
    learned: bool = True,
    status: str = "FINISHED",
) -> StudyRun:
    """A run logged like the train stage: gradient norms per layer (first/last = ratio), epoch-end val acc."""
    at = [20 * e for e in range(1, EPOCHS + 1)]
    history = {
        "epoch": [(s, float(e)) for e, s in enumerate(at, 1)],
        "val/acc": [(s, 0.95 if hits is not None and e >= hits else 0.3) for e, s in enumerate(at, 1)],
        "grad_norm/layer_01": [(s, ratio) for s in at],
    }
    history.update({f"grad_norm/layer_{i:02d}": [(s, 1.0) for s in at] for i in range(2, LAYERS + 1)})
    metrics = {k: v[-1][1] for k, v in history.items()}
    metrics.update({f"act_mean/layer_{i:02d}": mean for i in range(1, LAYERS + 1)})
    metrics.update({"test/acc": acc, "data/chance_acc": 0.1})
    labels = ["healthy"] if learned else ["not_learning"]
    if status != "FINISHED":
        history, metrics, labels = {}, {}, []
    return StudyRun(
        f"model.activation={name} seed={seed}",
        {"model.activation": name, "seed": seed},
        status,
        "id",
        labels,
        metrics,
        history,
    )


def textbook(**changes) -> list[StudyRun]:
    """Every activation on every seed; `changes` replaces an activation's tuple, a fifth item says if it learned."""
    runs = []
    for name, numbers in TEXTBOOK.items():
        ratio, mean, acc, hits, *learned = changes.get(name, numbers)
        learned = learned[0] if learned else name != "sigmoid"
        runs += [fake(name, s, ratio * j, mean * j, acc, hits, learned) for s, j in zip(SEEDS, JITTER)]
    return runs


def outcomes(found) -> list[str]:
    return [c.outcome for c in found.checks]


def test_textbook_numbers_hold_every_check(cfg):
    found = activations.findings(textbook(), cfg)
    assert outcomes(found) == [HOLDS] * 6, [(c.name, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED
    assert [r["activation"] for r in found.rows] == list(TEXTBOOK) and len(found.series["runs.csv"]) == 15
    assert found.metrics["grad_ratio/sigmoid"] == pytest.approx(2.5e-3 * np.prod(JITTER) ** (1 / 3))
    assert "activations.png" in found.figures


def test_the_costs_are_shown_relative_to_relu_and_decide_nothing(cfg, costs):
    found = activations.findings(textbook(), cfg)
    table = found.notes[-1]
    tanh = next(line for line in table.splitlines() if line.startswith("| tanh |"))
    assert f"| {costs['activation']['tanh'] / costs['activation']['relu']:.2f} |" in tanh
    assert found.metrics["controlled_step_us/elu"] == pytest.approx(370.0)
    assert not any("cost" in c.name or "time" in c.name for c in found.checks)


def test_a_sigmoid_gradient_as_large_as_relus_fails_its_check(cfg):
    found = activations.findings(textbook(sigmoid=(1.0, 0.5, 0.10, None)), cfg)
    assert outcomes(found) == [FAILS] + [HOLDS] * 5
    assert verdict(found.checks).verdict == PARTLY


def test_a_zero_centred_sigmoid_fails_its_check(cfg):
    found = activations.findings(textbook(sigmoid=(2.5e-3, 0.02, 0.10, None)), cfg)
    assert outcomes(found)[1] == FAILS and outcomes(found)[2] == HOLDS


def test_a_sigmoid_net_that_learns_fails_the_learning_and_accuracy_checks(cfg):
    found = activations.findings(textbook(sigmoid=(2.5e-3, 0.5, 0.95, 3, True)), cfg)
    assert outcomes(found)[3] == FAILS and outcomes(found)[5] == FAILS


def test_nothing_as_claimed_is_not_supported(cfg):
    found = activations.findings(
        textbook(
            sigmoid=(2.0, 0.0, 0.95, 2, True),
            tanh=(2.5, 0.6, 0.1, None, False),
            relu=(1.1, 0.87, 0.1, None, False),
            leaky_relu=(1.1, 0.86, 0.1, None, False),
            elu=(1.8, 0.29, 0.1, None, False),
        ),
        cfg,
    )
    assert set(outcomes(found)) == {FAILS}
    assert verdict(found.checks).verdict == NOT_SUPPORTED


def test_a_relu_seed_that_did_not_learn_leaves_the_learning_check_undecided(cfg):
    runs = textbook()
    runs = [
        r
        if not (r.values["model.activation"] == "relu" and r.seed == "1")
        else fake("relu", "1", 1.1, 0.87, 0.12, None, learned=False)
        for r in runs
    ]
    found = activations.findings(runs, cfg)
    assert outcomes(found)[4] == UNDECIDED and found.checks[4].why == "not on relu seed 1"


def test_a_missing_run_leaves_its_checks_undecided(cfg):
    runs = [
        r
        if not (r.values["model.activation"] == "tanh" and r.seed == "2")
        else fake("tanh", "2", 0, 0, 0, None, status="FAILED")
        for r in textbook()
    ]
    found = activations.findings(runs, cfg)
    assert outcomes(found) == [HOLDS, HOLDS, UNDECIDED, HOLDS, UNDECIDED, HOLDS]
    assert found.checks[2].why == "runs missing: seed 2"
    # no sigmoid in the grid: nothing to compare against
    found = activations.findings([r for r in textbook() if r.values["model.activation"] != "sigmoid"], cfg)
    assert outcomes(found) == [UNDECIDED] and "no sigmoid" in found.checks[0].why


def test_epochs_to_the_accuracy_target():
    assert activations.epochs_to_acc(fake("tanh", "0", 1, 0, 0.9, 3), 0.9) == 3
    assert math.isinf(activations.epochs_to_acc(fake("sigmoid", "0", 1, 0.5, 0.1, None), 0.9))


def test_the_activation_timing_varies_its_input_from_call_to_call():
    call = activations.activation_fns(["relu"])["relu"]
    first, second = call(), call()
    assert first.shape == (64, 64) and not np.array_equal(first, second)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real controlled costs
    result = run_study("activations", tmp_path, "study.n_jobs=1")
    folder = tmp_path / "reports" / "activations"
    assert result["runs"] == 5 and result["failed"] == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] in ("supported", "partly supported", "not supported", "undecided")
    assert len(summary["checks"]) == 6 and summary["seeds"] == ["0"]
    assert summary["checks"][0]["name"].startswith("sigmoid's gradient reaching the first layer")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["controlled_step_us/relu"] > 0 and metrics["controlled_activation_us/tanh"] > 0
    for name in ("summary.md", "activations.png", "runs.csv"):
        assert (folder / name).is_file()
