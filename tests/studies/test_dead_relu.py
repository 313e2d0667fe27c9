"""Study `dead_relu`: the smoke study end to end, and its verdict logic on hand-built runs."""

from __future__ import annotations

import json

from pipeline.studies import dead_relu
from pipeline.studies.base import StudyRun
from tests.helpers import run_study


def fake(case: str, dead: list[float], acc: float | None = 0.7, status: str = "FINISHED",
         seed: int | None = None) -> StudyRun:
    """A run of `case` whose dead share was probed every 10 steps (two layers); acc None = diverged."""
    values = {"model.activation": "leaky_relu"} if "leaky" in case else {}
    if seed is not None:
        values["seed"] = str(seed)
    hist = [(10 * (i + 1), v) for i, v in enumerate(dead)]
    history = {"dead_relu/total": hist, "dead_relu/layer_01": [(s, v / 2) for s, v in hist],
               "dead_relu/layer_02": [(s, min(1.0, 1.5 * v)) for s, v in hist]}
    metrics = {"dead_relu/total": dead[-1], "dead_relu/layer_01": dead[-1] / 2,
               "dead_relu/layer_02": min(1.0, 1.5 * dead[-1])} if dead else {}
    verdict = ["dead"] if dead and dead[-1] > 0.5 else ["healthy"]
    if acc is None:
        verdict, metrics["diverged_at_step"] = ["diverged"], 10.0 * (len(dead) + 1)
    else:
        metrics["test/acc"] = acc
    label = case + (f" seed={seed}" if seed is not None else "")
    return StudyRun(label, values, status, "id", verdict, metrics, history)


def textbook(**override: list[float]) -> list[StudyRun]:
    """Causes that kill units for good, cures that keep the share low; leaky nets keep learning."""
    dead = {"baseline": [0.1, 0.05, 0.03], "high_lr": [0.5, 0.6, 0.6], "large_init": [0.05, 0.3, 0.4],
            "neg_bias": [0.45, 0.4, 0.35], "high_lr+leaky": [0.6, 0.8, 0.8], "large_init+leaky": [0.05, 0.3, 0.3],
            "neg_bias+leaky": [0.45, 0.4, 0.34], "large_init+adam": [0.08, 0.09, 0.09],
            "large_init+adagrad": [0.07, 0.07, 0.07], "neg_bias+adam": [0.45, 0.4, 0.33]}
    dead.update({k.replace("__", "+"): v for k, v in override.items()})
    acc = {"high_lr": 0.33, "large_init": 0.33, "neg_bias": 0.5}
    acc.update({f"{c}+leaky": a + 0.2 for c, a in acc.items()})
    return [fake(name, series, acc.get(name, 0.75)) for name, series in dead.items()]


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("dead_relu", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "dead_relu"
    assert result["runs"] == 3 and result["failed"] == 0  # baseline, high_lr, high_lr+leaky
    for name in ("summary.md", "metrics.json", "dead_relu.png"):
        assert (folder / name).is_file()
    summary = (folder / "summary.md").read_text()
    assert "| case | change | seed | dead share final |" in summary
    assert "| high_lr+leaky | optimizer.lr=2.0 model.activation=leaky_relu |" in summary
    assert sum(line.startswith("| ") for line in summary.splitlines()) == 1 + 3
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["finished"] == 3 and metrics["supported"] == -1  # the smoke size has no large_init, neg_bias
    assert {"dead_final/baseline", "dead_final/high_lr", "dead_final/high_lr+leaky"} <= set(metrics)


def test_textbook_numbers_support_the_claim():
    rep = dead_relu.report(textbook(), None)
    assert rep.supported is True
    assert all(n.endswith(": yes") for n in rep.notes if n.startswith("- "))
    assert "high_lr 0.60" in rep.conclusion and "NOT lower than relu's" in rep.conclusion
    assert rep.metrics["dead_final/large_init+adam"] == 0.09
    assert [r["case"] for r in rep.rows][:2] == ["baseline", "high_lr"]
    assert rep.rows[1]["dead per layer (final)"] == "0.30/0.90"


def test_units_that_come_back_contradict_the_claim():
    rep = dead_relu.report(textbook(high_lr=[0.5, 0.2, 0.05]), None)
    assert rep.supported is False
    assert "every cause raises" in rep.conclusion and "stay" in rep.conclusion


def test_an_adaptive_optimizer_that_does_not_help_contradicts_the_claim():
    rep = dead_relu.report(textbook(large_init__adam=[0.1, 0.3, 0.4]), None)
    assert rep.supported is False
    assert "adam and adagrad on large_init" in rep.conclusion


def test_leaky_nets_that_learn_no_better_contradict_the_claim():
    runs = textbook()
    for r in runs:
        if "leaky" in r.label:
            r.metrics["test/acc"] = 0.3
    assert dead_relu.report(runs, None).supported is False


def test_missing_failed_and_diverged_runs():
    runs = [r for r in textbook() if r.label != "neg_bias"]
    assert dead_relu.report(runs, None).supported is None
    diverged = textbook()
    diverged[1] = fake("high_lr", [0.55, 0.6], acc=None)  # stopped early: its last dead share still counts
    rep = dead_relu.report(diverged, None)
    assert rep.supported is True and rep.metrics["test_acc/high_lr"] == dead_relu.CHANCE
    failed = [fake("baseline", [], status="FAILED"), fake("high_lr", [], acc=None)]
    rep = dead_relu.report(failed, None)
    assert rep.supported is None and "dead_relu.png" in rep.figures


def test_seeds_are_averaged_per_case():
    runs = [r for r in textbook() if r.label != "baseline"]
    runs += [fake("baseline", [0.1, 0.02], seed=0), fake("baseline", [0.1, 0.06], seed=1)]
    rep = dead_relu.report(runs, None)
    assert abs(rep.metrics["dead_final/baseline"] - 0.04) < 1e-12
