"""Study `optimizers`: the smoke study end to end, and its verdict logic on hand-built runs."""

from __future__ import annotations

import json
import math

from omegaconf import OmegaConf

from pipeline.studies import optimizers
from pipeline.studies.base import StudyRun
from tests.helpers import run_study

LRS = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001,
       "adamw": 0.001}


def fake(opt: str, losses: list[float], steps: list[float] | None = None, status: str = "FINISHED") -> StudyRun:
    """A run with one measurement per epoch (20 steps each); `steps` = its effective step size per epoch.

    The effective step is encoded as update_ratio * weight_norm / grad_norm, as the probes log it.
    """
    lr = LRS[opt]
    steps = steps if steps is not None else [lr] * len(losses)
    at = [20 * (i + 1) for i in range(len(losses))]
    acc = [min(0.99, 1.0 - v / 2.5) for v in losses]
    history = {"epoch": [(s, i + 1.0) for i, s in enumerate(at)], "train/loss": list(zip(at, losses)),
               "val/acc": list(zip(at, acc)), "lr": [(s, lr) for s in at],
               "update_ratio/layer_01": [(s, e * 2.0 / 4.0) for s, e in zip(at, steps)],  # ||dW|| = e * ||g||
               "weight_norm/layer_01": [(s, 4.0) for s in at], "grad_norm/layer_01": [(s, 2.0) for s in at]}
    metrics = {k: v[-1][1] for k, v in history.items() if v}
    if losses:
        metrics["test/acc"] = acc[-1]
    return StudyRun(f"optimizer={opt}", {"optimizer": opt}, status, "id", ["healthy"], metrics, history)


def decaying(lr: float, n: int) -> list[float]:
    return [lr / math.sqrt(i + 1) for i in range(n)]


def textbook(**curves: list[float]) -> list[StudyRun]:
    """SGD slow, momentum and the adaptive rules fast; Adagrad's step decays like 1/sqrt(t)."""
    n = 10
    slow = [2.3 - 0.12 * i for i in range(n)]  # reaches 0.5? no: ends at 1.22
    fast = [2.0 * 0.7 ** i for i in range(n)]  # below 0.5 from epoch 5
    losses = {"sgd": slow, "momentum": fast, "nesterov": fast, "adagrad": fast, "rmsprop": fast, "adam": fast,
              "adamw": fast}
    losses.update(curves)
    steps = {"adagrad": decaying(0.5, n), "rmsprop": [0.3] * n, "adam": [0.1] * n, "adamw": [0.1] * n}
    return [fake(opt, loss, steps.get(opt)) for opt, loss in losses.items()]


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("optimizers", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "optimizers"
    assert result["runs"] == 3 and result["failed"] == 0  # sgd, adagrad, adam
    for name in ("summary.md", "metrics.json", "optimizers.png"):
        assert (folder / name).is_file()
    summary = (folder / "summary.md").read_text()
    assert "| optimizer | lr | seed | epochs to loss <= 0.5 |" in summary
    assert "| sgd | 0.1 | 0 |" in summary and "| adam | 0.001 | 0 |" in summary
    assert sum(line.startswith("| ") for line in summary.splitlines()) == 1 + 3
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["finished"] == 3 and metrics["supported"] == -1  # no momentum, rmsprop at smoke size
    assert "final_loss/sgd" in metrics and "step_decay/adagrad" in metrics


def test_effective_step_is_lr_for_sgd_and_decays_for_adagrad():
    run = fake("adagrad", [1.0] * 10, decaying(0.5, 10))
    steps, eff = optimizers.effective_step(run)
    assert list(steps) == [20.0 * (i + 1) for i in range(10)] and abs(eff[0] - 0.5) < 1e-12
    early, late, decay = optimizers.step_decay(run)
    assert early == 0.5 and abs(decay - 1 / math.sqrt(10)) < 1e-12
    assert optimizers.step_decay(fake("sgd", [1.0] * 10))[2] == 1.0


def test_textbook_numbers_support_the_claim():
    rep = optimizers.report(textbook(), None)
    assert rep.supported is True
    assert all(n.endswith(": yes") for n in rep.notes if n.startswith("- "))
    assert "sgd never" in rep.conclusion and "momentum 5" in rep.conclusion
    assert rep.metrics["epochs_to_loss/adam"] == 5 and rep.metrics["step_decay/adam"] == 1.0
    assert rep.rows[0]["lr"] == 0.1 and math.isinf(rep.rows[0]["epochs to loss <= 0.5"])


def test_momentum_no_faster_than_sgd_contradicts_the_claim():
    slow = [2.3 - 0.12 * i for i in range(10)]
    rep = optimizers.report(textbook(momentum=slow), None)
    assert rep.supported is False
    assert "Not supported: momentum reaches loss 0.5" in rep.conclusion


def test_adagrad_with_a_constant_step_contradicts_the_claim():
    runs = [r if r.label != "optimizer=adagrad" else fake("adagrad", [2.0 * 0.7 ** i for i in range(10)])
            for r in textbook()]
    rep = optimizers.report(runs, None)
    assert rep.supported is False and "adagrad's effective step decays" in rep.conclusion


def test_target_comes_from_the_study_config():
    cfg = OmegaConf.create({"study": {"target_loss": 1.5, "target_acc": 0.5}})
    rep = optimizers.report(textbook(), cfg)
    assert "epochs to training loss <= 1.5" in rep.conclusion
    assert rep.metrics["epochs_to_loss/sgd"] == 8  # 2.3 - 0.12 * 7 = 1.46


def test_missing_and_failed_runs_leave_it_undecided():
    runs = [r for r in textbook() if r.label != "optimizer=rmsprop"]
    assert optimizers.report(runs, None).supported is None
    runs = textbook()
    runs[0] = fake("sgd", [], status="FAILED")
    rep = optimizers.report(runs, None)
    assert rep.supported is None and len(rep.rows) == 6 and "optimizers.png" in rep.figures
    assert optimizers.report([], None).supported is None
