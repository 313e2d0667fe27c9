"""Study `normalization`: its checks on hand-built runs (per seed), and the smoke study end to end (slow)."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.analysis.diagnosis import diagnose
from pipeline.studies import normalization as study
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from pipeline.studies.measures import thresholds
from tests.helpers import config, run_study

SEEDS = (0, 1, 2)
CHANCE_ACC, CHANCE_LOSS = 0.1, math.log(10)  # digits: ten balanced classes
CASES = {
    "sigmoid": {"model.activation": "sigmoid", "init": "xavier_uniform"},
    "relu": {"model.activation": "relu", "init": "he_normal", "init.gain": "0.4"},
}
VARIANTS = {"plain": (False, False), "bn": (True, False), "res": (False, True), "bn+res": (True, True)}


@pytest.fixture(scope="module")
def cfg():
    return config("study=normalization", hydra=True)


@pytest.fixture(scope="module")
def min_gain(cfg):
    return thresholds(cfg, *study.LIMITS)["min_gain"]


def fake(case: str, name: str, seed: int, acc: float | None, depth: int = 20, status: str = "FINISHED") -> StudyRun:
    """A run of one case and variant; acc None = diverged. Labelled as analysis.diagnosis labels real runs: the
    final loss follows the accuracy (at chance: the constant predictor's loss)."""
    bn, res = VARIANTS[name]
    values = {
        **CASES[case],
        "model.depth": str(depth),
        "model.batch_norm": str(bn).lower(),
        "model.residual": str(res).lower(),
        "seed": str(seed),
    }
    metrics = {"data/chance_acc": CHANCE_ACC, "data/chance_loss": CHANCE_LOSS, "train/initial_loss": 2.4}
    steps = [20 * i for i in range(1, 6)]
    if acc is None:
        metrics["diverged_at_step"] = 2.0
        losses = [float("nan")]
        steps = [2]
    else:
        end = CHANCE_LOSS * (1.0 if acc <= CHANCE_ACC + 0.05 else 1 - acc)
        metrics.update({"test/acc": acc, "train/final_loss": end})
        losses = [2.4 + (end - 2.4) * i / 5 for i in range(1, 6)]
    history = {
        "train/loss": list(zip(steps, losses)),
        "grad_norm/layer_01": [(s, 1e-9 if name == "plain" else 0.5) for s in steps],
        f"grad_norm/layer_{depth + 1:02d}": [(s, 1.0) for s in steps],
        "act_std/layer_01": [(0, 0.5)],
        f"act_std/layer_{depth:02d}": [(0, 0.5 * 0.28**depth)],
        f"act_std/layer_{depth + 1:02d}": [(0, 1e-3)],
    }
    labels = diagnose(metrics, None, acc is None)
    label = f"{case} model.depth={depth} model.batch_norm={bn} model.residual={res} seed={seed}"
    return StudyRun(label, values, status, "id", labels, metrics, history, case=case)


def runs(overrides: dict | None = None, variants=tuple(VARIANTS)) -> list[StudyRun]:
    """Both cases x the variants x 3 seeds; textbook accuracies unless `overrides[(case, variant, seed)] = acc`."""
    textbook = {"plain": 0.10, "bn": 0.90, "res": 0.94, "bn+res": 0.93}
    out = []
    for case in CASES:
        for name in variants:
            for seed in SEEDS:
                acc = (overrides or {}).get((case, name, seed), textbook[name] + 0.01 * seed * (name != "plain"))
                out.append(fake(case, name, seed, acc))
    return out


def outcomes(found) -> dict[str, str]:
    return {c.name: c.outcome for c in found.checks}


def check(found, case: str, start: str):
    """The check of one case whose name starts with `start` ("plain", "batch norm makes", "...")."""
    mine = [c for c in found.checks if c.name.startswith(start) and f"-layer {case} (" in c.name]
    assert len(mine) == 1, [c.name for c in found.checks]
    return mine[0]


def test_textbook_runs_support_every_check(cfg):
    found = study.findings(runs(), cfg)
    assert set(outcomes(found).values()) == {HOLDS}, [(c.name, c.measured, c.why) for c in found.checks]
    # per case: the plain net, three cures, the weakest cure's margin
    assert verdict(found.checks).verdict == SUPPORTED and len(found.checks) == len(CASES) * 5
    assert len(found.rows) == len(CASES) * len(VARIANTS) and {r["seeds"] for r in found.rows} == {len(SEEDS)}
    assert len(found.series["runs.csv"]) == len(CASES) * len(VARIANTS) * len(SEEDS)
    assert found.metrics["learned_share/relu_d20_plain"] == 0 and found.metrics["learned_share/relu_d20_res"] == 1
    assert "normalization.png" in found.figures


def test_the_names_say_which_init_is_tested(cfg):
    found = study.findings(runs(), cfg)
    assert check(found, "relu", "plain").name == "plain, the 20-layer relu (he_normal, gain 0.4) net does not learn"
    assert check(found, "sigmoid", "residual connections make").outcome == HOLDS


def test_relu_residual_blocks_that_diverge_fail_their_part(cfg):
    diverged = {("relu", "res", s): None for s in SEEDS}  # what He's scale does to residual ReLU blocks
    found = study.findings(runs(diverged), cfg)
    assert check(found, "relu", "residual connections make").outcome == FAILS
    assert check(found, "relu", "...").outcome == FAILS  # a diverged cure counts as chance: no margin
    assert check(found, "sigmoid", "residual connections make").outcome == HOLDS
    assert str(verdict(found.checks)) == f"{PARTLY} (8 of 10)"


def test_a_plain_net_that_learns_contradicts_the_claim(cfg):
    found = study.findings(runs({("sigmoid", "plain", s): 0.6 + 0.01 * s for s in SEEDS}), cfg)
    assert check(found, "sigmoid", "plain").outcome == FAILS
    assert check(found, "relu", "plain").outcome == HOLDS


def test_cures_that_learn_only_a_little_fail_the_margin(cfg, min_gain):
    barely = {("relu", name, s): CHANCE_ACC + 0.8 * min_gain for name in ("bn", "res", "bn+res") for s in SEEDS}
    found = study.findings(runs(barely), cfg)
    assert [r.learned for r in runs(barely) if r.case == "relu" and study.variant(r) == "bn"] == [True] * 3
    assert check(found, "relu", "...").outcome == FAILS
    assert check(found, "relu", "batch norm makes").outcome == HOLDS


def test_seeds_that_disagree_leave_it_undecided(cfg):
    found = study.findings(runs({("sigmoid", "bn", 1): 0.12}), cfg)
    bn = check(found, "sigmoid", "batch norm makes")
    assert bn.outcome == UNDECIDED and bn.why == "not on seed 1"


def test_a_missing_run_makes_its_checks_undecided(cfg):
    all_runs = runs()
    gone = next(r for r in all_runs if r.case == "relu" and study.variant(r) == "plain" and r.seed == "2")
    gone.status = "KILLED"
    found = study.findings(all_runs, cfg)
    assert check(found, "relu", "plain").outcome == UNDECIDED and "seed 2" in check(found, "relu", "plain").why
    assert check(found, "relu", "...").outcome == UNDECIDED
    assert verdict(found.checks).verdict == PARTLY


def test_a_missing_cure_leaves_the_margin_undecided(cfg):
    all_runs = runs()
    gone = next(r for r in all_runs if r.case == "sigmoid" and study.variant(r) == "bn+res" and r.seed == "0")
    gone.status = "FAILED"  # the last cure: a nan there must not be skipped by the minimum
    found = study.findings(all_runs, cfg)
    margin = check(found, "sigmoid", "...")
    assert margin.outcome == UNDECIDED and "seed 0" in margin.why


def test_a_size_without_residual_blocks_leaves_those_parts_undecided(cfg):
    found = study.findings(runs(variants=("plain", "bn")), cfg)
    res = check(found, "sigmoid", "residual connections make")
    assert res.outcome == UNDECIDED and "no res net" in res.why
    assert check(found, "sigmoid", "batch norm makes").outcome == HOLDS
    assert study.findings([], cfg).checks[0].outcome == UNDECIDED


def test_a_diverged_run_counts_as_chance():
    run = fake("relu", "res", 0, None)
    assert run.diverged and not run.learned and study.accuracy(run) == CHANCE_ACC
    assert math.isnan(study.accuracy(fake("relu", "res", 0, 0.9, status="FAILED")))


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("normalization", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "normalization"
    assert result["runs"] == 4 and result["failed"] == 0  # 2 activations x batch norm off/on, depth 4
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == result["verdict"] and summary["finished"] == 4
    names = [c["name"] for c in summary["checks"]]
    assert len(names) == 2 * 5 and all(c["outcome"] in (HOLDS, FAILS, UNDECIDED) for c in summary["checks"])
    # the smoke size runs no residual blocks: those parts are undecided, never dropped
    residual = [c for c in summary["checks"] if c["name"].startswith("residual connections make")]
    assert len(residual) == 2 and {c["outcome"] for c in residual} == {UNDECIDED}
    assert (folder / "normalization.png").read_bytes()[:4] == b"\x89PNG" and (folder / "runs.csv").is_file()
