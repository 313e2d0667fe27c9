"""Study `optimizers`: its checks on hand-built runs (tuning on validation, per-seed comparisons), and the smoke
study end to end."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.studies import optimizers
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import (
    FAILS,
    HOLDS,
    NOT_SUPPORTED,
    PARTLY,
    SUPPORTED,
    UNDECIDED,
    verdict,
)
from tests.helpers import config, run_study

EPOCHS = 12
SEEDS = ("0", "1", "2")
# each rule's grid (low, tuned, high) and the epoch its training loss leaves the plateau at the tuned lr, per seed
GRIDS = {
    "sgd": (1.0, 3.0, 10.0),
    "momentum": (0.1, 0.3, 1.0),
    "adagrad": (0.03, 0.1, 0.3),
    "rmsprop": (0.003, 0.01, 0.03),
    "adam": (0.01, 0.03, 0.1),
}
FASTER_AND_ADAGRAD = ("momentum", "rmsprop", "adam", "adagrad")
FAST = {"sgd": (9, 10, 9), "momentum": (6, 7, 6), "adagrad": (3, 3, 4), "rmsprop": (3, 3, 4), "adam": (3, 4, 3)}


@pytest.fixture(scope="module")
def cfg():
    return config("study=optimizers", hydra=True)


def plateau(leaves: int | None) -> list[float]:
    """Epoch losses: 2.3 on the plateau, 0.4 from epoch `leaves` on (None: never leaves)."""
    return [2.3 if leaves is None or e < leaves else 0.4 for e in range(1, EPOCHS + 1)]


def steps_of(rule: str, lr: float) -> list[float]:
    """The effective step per epoch: lr for sgd/momentum, lr/sqrt(t) for adagrad, growing for rmsprop/adam."""
    if rule == "adagrad":
        return [lr / math.sqrt(e) for e in range(1, EPOCHS + 1)]
    if rule in ("rmsprop", "adam"):
        return [lr * (1 + 0.5 * e) for e in range(EPOCHS)]
    return [lr] * EPOCHS


def fake(
    rule: str,
    lr: float,
    seed: str,
    train: list[float],
    val: list[float] | None = None,
    steps: list[float] | None = None,
    status: str = "FINISHED",
) -> StudyRun:
    """A run logged like the train stage: one probe point per epoch (20 steps); effective step = update_ratio x
    weight_norm / grad_norm."""
    val = train if val is None else val
    steps = steps_of(rule, lr) if steps is None else steps
    at = [20 * e for e in range(1, EPOCHS + 1)]
    history = {
        "epoch": [(s, float(e)) for e, s in enumerate(at, 1)],
        "train/loss": list(zip(at, train)),
        "val/loss": list(zip(at, val)),
        "val/acc": [(s, 0.95 if v < 1 else 0.1) for s, v in zip(at, val)],
        "update_ratio/layer_01": [(s, e * 2.0 / 4.0) for s, e in zip(at, steps)],  # ||dW|| = e ||g||
        "weight_norm/layer_01": [(s, 4.0) for s in at],
        "grad_norm/layer_01": [(s, 2.0) for s in at],
    }
    metrics = {k: v[-1][1] for k, v in history.items() if v}
    metrics.update({"test/acc": 0.95, "lr": lr})
    return StudyRun(
        f"{rule} optimizer.lr={lr:g} seed={seed}",
        {"optimizer": rule, "optimizer.lr": f"{lr:g}", "seed": seed},
        status,
        "id",
        ["healthy"],
        metrics,
        history,
        case=rule,
    )


def textbook(fast: dict | None = None, steps: dict | None = None) -> list[StudyRun]:
    """Every rule fastest at the middle of its grid; the neighbours 3 epochs slower or never off the plateau."""
    fast = {**FAST, **(fast or {})}
    runs = []
    for rule, (low, mid, high) in GRIDS.items():
        for i, seed in enumerate(SEEDS):
            leaves = fast[rule][i]
            for lr, at in ((low, leaves + 3), (mid, leaves), (high, None)):
                runs.append(fake(rule, lr, seed, plateau(at), steps=(steps or {}).get(rule)))
    return runs


def outcomes(found) -> dict[str, str]:
    return {c.name.split(" ")[0] + (" share" if "lower of" in c.name else ""): c.outcome for c in found.checks}


def test_effective_step_is_lr_for_sgd_and_decays_for_adagrad():
    run = fake("adagrad", 0.5, "0", plateau(3))
    steps, eff = optimizers.effective_step(run)
    assert list(steps) == [20.0 * e for e in range(1, EPOCHS + 1)] and math.isclose(eff[0], 0.5)
    # 10 % of 12 measurements rounds to one at each end: late/early = (0.5/sqrt(12)) / 0.5
    assert math.isclose(optimizers.step_decay(run, 0.1), 1 / math.sqrt(EPOCHS))
    assert math.isclose(optimizers.step_decay(fake("sgd", 3.0, "0", plateau(3)), 0.1), 1.0)


def test_textbook_numbers_hold_every_check(cfg):
    found = optimizers.findings(textbook(), cfg)
    assert [c.outcome for c in found.checks] == [HOLDS] * 5, [(c.name, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED
    assert {k: v for k, v in found.metrics.items() if k.startswith("tuned_lr/")} == {
        f"tuned_lr/{rule}": grid[1] for rule, grid in GRIDS.items()
    }
    assert found.metrics["epochs_to_loss/momentum"] == pytest.approx(19 / 3)
    assert sum(r["picked"] == "picked" for r in found.rows) == len(GRIDS) and len(found.rows) == 3 * len(GRIDS)
    assert len(found.series["runs.csv"]) == 9 * len(GRIDS) and "optimizers.png" in found.figures


def test_momentum_no_faster_than_sgd_fails_its_check_only(cfg):
    found = optimizers.findings(textbook(fast={"momentum": (10, 11, 10)}), cfg)
    assert outcomes(found) == {
        "momentum": FAILS,
        "rmsprop": HOLDS,
        "adam": HOLDS,
        "adagrad's": HOLDS,
        "adagrad's share": HOLDS,
    }
    assert verdict(found.checks).verdict == PARTLY


def test_adagrad_with_a_growing_step_fails_the_decay_checks(cfg):
    found = optimizers.findings(textbook(steps={"adagrad": steps_of("rmsprop", 0.1)}), cfg)
    assert outcomes(found)["adagrad's"] == FAILS and outcomes(found)["adagrad's share"] == FAILS


def test_nothing_faster_than_sgd_and_no_decay_is_not_supported(cfg):
    flat = {r: steps_of("rmsprop", 0.1) for r in ("adagrad", "rmsprop", "adam")}
    found = optimizers.findings(textbook(fast={r: (12, 12, 12) for r in FASTER_AND_ADAGRAD}, steps=flat), cfg)
    assert set(outcomes(found).values()) == {FAILS}
    assert verdict(found.checks).verdict == NOT_SUPPORTED


def test_the_pick_follows_validation_not_training_loss(cfg):
    # at sgd's top lr the training loss leaves the plateau at epoch 2, but the validation loss never does
    runs = [r for r in textbook() if not (r.case == "sgd" and r.values["optimizer.lr"] == "1")]
    runs += [fake("sgd", 1.0, s, plateau(2), val=plateau(None)) for s in SEEDS]
    found = optimizers.findings(runs, cfg)
    assert found.metrics["tuned_lr/sgd"] == 3.0 and outcomes(found)["momentum"] == HOLDS


def test_a_pick_at_the_edge_of_its_grid_leaves_that_rules_checks_undecided(cfg):
    # sgd fastest at its largest lr: the optimum may lie beyond the grid
    runs = [r for r in textbook() if not (r.case == "sgd" and r.values["optimizer.lr"] == "10")]
    runs += [fake("sgd", 10.0, s, plateau(5)) for s in SEEDS]
    found = optimizers.findings(runs, cfg)
    assert outcomes(found) == {
        "momentum": UNDECIDED,
        "rmsprop": UNDECIDED,
        "adam": UNDECIDED,
        "adagrad's": HOLDS,
        "adagrad's share": HOLDS,
    }
    assert "edge of its grid" in found.checks[0].why


def test_a_missing_run_leaves_its_checks_undecided(cfg):
    # adam's seed 1 failed at every lr: no adam lr is measured on every seed
    runs = [
        r if not (r.case == "adam" and r.seed == "1") else fake("adam", r.get("lr"), "1", [], status="FAILED")
        for r in textbook()
    ]
    found = optimizers.findings(runs, cfg)
    assert outcomes(found)["adam"] == UNDECIDED and outcomes(found)["adagrad's share"] == UNDECIDED
    assert outcomes(found)["momentum"] == HOLDS and "no lr of adam" in found.checks[2].why
    # a size without momentum cases: its check cannot be measured
    found = optimizers.findings([r for r in textbook() if r.case != "momentum"], cfg)
    assert outcomes(found)["momentum"] == UNDECIDED and "no momentum case" in found.checks[0].why


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("optimizers", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "optimizers"
    assert result["runs"] == 4 and result["failed"] == 0  # sgd at two lrs, adagrad and adam at one
    summary = json.loads((folder / "summary.json").read_text())
    # two epochs, one seed, one-value grids: nothing is tuned, so nothing is decided
    assert summary["verdict"] == "undecided" and summary["seeds"] == ["0"]
    assert [c["outcome"] for c in summary["checks"]] == [UNDECIDED] * 5
    assert all(c["why"] for c in summary["checks"])
    for name in ("summary.md", "metrics.json", "optimizers.png", "runs.csv", "tuning.csv"):
        assert (folder / name).is_file()
