"""Study `normalization`: the smoke study end to end, and its verdict logic on hand-built runs."""

from __future__ import annotations

import json

from pipeline.studies import normalization
from pipeline.studies.base import StudyRun
from tests.helpers import run_study


def fake(act: str, depth: int, bn: bool, res: bool, acc: float | None, losses: list[float],
         status: str = "FINISHED") -> StudyRun:
    """A run whose train/loss was logged every 20 steps; acc None = diverged (no test/acc, NaN last loss)."""
    values = {"model.activation": act, "model.depth": str(depth), "model.batch_norm": str(bn),
              "model.residual": str(res)}  # the runner's sweep values: 'True' / 'False'
    loss_hist = [(20 * (i + 1), v) for i, v in enumerate(losses)]
    grads = [(s, 1e-6 if act == "sigmoid" and not (bn or res) else 0.5) for s, _ in loss_hist]
    history = {"train/loss": loss_hist, "grad_norm/layer_01": grads,
               "grad_norm/layer_02": [(s, 1.0) for s, _ in loss_hist]}
    metrics = {"train/loss": losses[-1]} if losses else {}
    verdict = ["healthy"]
    if acc is None:
        history["train/loss"] = loss_hist + [(20 * (len(losses) + 1), float("nan"))]
        metrics["diverged_at_step"] = 20.0 * (len(losses) + 1)
        verdict = ["diverged"]
    else:
        metrics["test/acc"] = acc
    label = f"{act} model.depth={depth} model.batch_norm={bn} model.residual={res}"
    return StudyRun(label, values, status, "id", verdict, metrics, history)


def grid(plain_sigmoid_acc: float = 0.1, cure_acc: float = 0.9, relu_res_diverges: bool = True) -> list[StudyRun]:
    """Both activations at depths 20 and 50, plain / bn / res / bn+res."""
    runs = []
    for act in ("sigmoid", "relu"):
        for depth in (20, 50):
            plain = plain_sigmoid_acc if act == "sigmoid" else 0.3
            runs.append(fake(act, depth, False, False, plain, [2.35, 2.31, 2.30]))
            runs.append(fake(act, depth, True, False, cure_acc, [2.0, 1.0, 0.4]))
            diverge = act == "relu" and relu_res_diverges
            runs.append(fake(act, depth, False, True, None if diverge else cure_acc,
                             [90.0] if diverge else [60.0, 3.0, 0.5]))
            runs.append(fake(act, depth, True, True, cure_acc - 0.05, [200.0, 5.0, 0.6]))
    return runs


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("normalization", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "normalization"
    assert result["runs"] == 4 and result["failed"] == 0  # 2 activations x batch norm off/on, depth 4
    for name in ("summary.md", "metrics.json", "normalization.png"):
        assert (folder / name).is_file()
    summary = (folder / "summary.md").read_text()
    assert "| activation | depth | variant | seed | test acc |" in summary
    assert sum(line.startswith("| ") for line in summary.splitlines()) == 1 + 4
    assert "4 runs, 4 finished" in summary
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["finished"] == 4 and "test_acc/sigmoid_d4_plain" in metrics and "test_acc/relu_d4_bn" in metrics


def test_textbook_numbers_support_the_claim():
    rep = normalization.report(grid(), None)
    assert rep.supported is True
    assert all(n.endswith(": yes") for n in rep.notes if n.startswith("- "))
    assert "sigmoid depth 50: plain 0.10" in rep.conclusion and "relu d20 res" in rep.conclusion
    assert rep.metrics["test_acc/relu_d50_res"] == normalization.CHANCE  # diverged counts as chance
    assert rep.metrics["trained_share/sigmoid_d20_bn"] == 1.0
    diverged = [r for r in rep.rows if r["verdict"] == "diverged"]
    assert len(diverged) == 2 and not any(r["trains"] for r in diverged)
    assert "normalization.png" in rep.figures


def test_a_plain_sigmoid_net_that_trains_contradicts_the_claim():
    rep = normalization.report(grid(plain_sigmoid_acc=0.9), None)
    assert rep.supported is False
    assert "Not supported" in rep.conclusion and "- plain sigmoid nets stay at chance" in rep.notes[0]
    assert rep.notes[0].endswith(": no")


def test_cures_that_do_not_train_contradict_the_claim():
    rep = normalization.report(grid(cure_acc=0.25), None)
    assert rep.supported is False
    assert "best cure trains" in rep.conclusion


def test_missing_or_failed_runs_leave_it_undecided():
    runs = [r for r in grid() if not (r.values["model.activation"] == "relu" and
                                     r.values["model.batch_norm"] == "False" and r.values["model.residual"] == "False")]
    assert normalization.report(runs, None).supported is None  # no plain relu net to compare with
    failed = [fake("sigmoid", 20, False, False, None, [], status="FAILED")]
    rep = normalization.report(failed, None)
    assert rep.supported is None and rep.rows == []
    assert normalization.report([], None).supported is None
