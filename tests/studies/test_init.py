"""Study `init`: its checks on hand-built training runs, and the smoke study end to end."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.studies import init as study
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from tests.helpers import config, run_study

DEPTH = 8
SEEDS = ("0", "1", "2")
JITTER = (1.0, 1.01, 0.99)  # per seed, on the per-layer act std factor: a seed spread
STEPS = (10, 20, 30)  # probe measurements after the step-0 one
INITS = {
    "zeros": "zeros",
    "constant": "constant",
    "normal 0.01": "normal",
    "normal 1.0": "normal",
    "standard": "standard",
    "xavier": "xavier_normal",
    "he": "he_normal",
}


@pytest.fixture(scope="module")
def cfg():
    return config("study=init", hydra=True)


def fake(
    act: str,
    case: str,
    seed: str,
    factor: float,
    first: float = 0.5,
    saturation: float = 0.0,
    grad: float = 1.0,
    acc: float = 0.95,
    loss: tuple[float, float] = (2.3, 0.05),
    labels: tuple[str, ...] = ("healthy",),
    status: str = "FINISHED",
) -> StudyRun:
    """A train-stage run: act std `first` at layer 1 changing by `factor` per hidden layer at step 0, weight
    gradients of size `grad`, losses (initial, final) over the training set; acc None = diverged (no test acc)."""
    hidden = [f"layer_{i:02d}" for i in range(1, DEPTH + 1)]
    acts = [first * factor**i for i in range(DEPTH)] + [1.0]  # the hidden layers, then the output
    history = {f"act_std/layer_{i:02d}": [(0, a)] + [(s, 0.5) for s in STEPS] for i, a in enumerate(acts, 1)}
    if act == "tanh":  # the saturation probe only measures activations that saturate, hidden layers only
        history |= {f"saturation/{k}": [(0, saturation)] + [(s, 0.0) for s in STEPS] for k in hidden}
    history |= {f"grad_norm/layer_{i:02d}": [(s, grad) for s in STEPS] for i in range(1, DEPTH + 2)}
    history["train/loss"] = [(s, loss[0] + (loss[1] - loss[0]) * k / (len(STEPS) - 1)) for k, s in enumerate(STEPS)]
    metrics = {k: pts[-1][1] for k, pts in history.items()}
    metrics |= {"train/initial_loss": loss[0], "train/final_loss": loss[1], "data/chance_acc": 0.1}
    if acc is not None:
        metrics["test/acc"] = acc
    values = {"init": INITS[case], "model.activation": act, "seed": seed}
    if case.startswith("normal"):
        values["init.std"] = case.split()[1]
    if status != "FINISHED":
        return StudyRun(f"{case} {act} seed={seed}", values, status, "id", case=case)
    return StudyRun(f"{case} {act} seed={seed}", values, status, "id", list(labels), metrics, history, case=case)


ZERO = dict(factor=1.0, first=0.0, grad=0.0, acc=0.1, loss=(2.3026, 2.3020), labels=("not_learning", "symmetric"))
TEXTBOOK = {  # (activation, case) -> how it behaves, as measured
    ("tanh", "zeros"): ZERO,
    ("relu", "zeros"): {**ZERO, "labels": ("not_learning", "dead", "symmetric")},
    ("tanh", "constant"): dict(factor=1.0, first=0.13, acc=0.23, loss=(2.3, 1.7), labels=("not_learning", "symmetric")),
    ("relu", "constant"): dict(factor=1.0, first=0.09, acc=0.24, loss=(2.3, 1.9), labels=("not_learning", "symmetric")),
    ("tanh", "normal 0.01"): dict(
        factor=0.08, first=0.08, grad=1e-3, acc=0.1, loss=(2.3, 2.3), labels=("not_learning", "vanishing")
    ),
    ("relu", "normal 0.01"): dict(
        factor=0.057, first=0.05, grad=1e-4, acc=0.1, loss=(2.3, 2.3), labels=("not_learning", "vanishing")
    ),
    ("tanh", "normal 1.0"): dict(
        factor=1.0, first=0.94, saturation=0.81, acc=0.43, loss=(11.0, 2.7), labels=("saturated",)
    ),
    ("relu", "normal 1.0"): dict(
        factor=5.66, first=4.6, grad=math.inf, acc=None, loss=(7.8e6, math.inf), labels=("diverged", "exploding")
    ),
    ("tanh", "standard"): dict(factor=0.58, first=0.43, acc=0.5, loss=(2.3, 1.4)),
    ("relu", "standard"): dict(factor=0.45, first=0.33, acc=0.14, loss=(2.3, 2.3), labels=("not_learning",)),
    ("tanh", "xavier"): dict(factor=0.89, first=0.59, saturation=0.007, acc=0.96, loss=(2.3, 0.04)),
    ("relu", "xavier"): dict(factor=0.707, first=0.58, acc=0.92, loss=(2.3, 0.05)),
    ("tanh", "he"): dict(factor=0.97, first=0.69, saturation=0.05, acc=0.94, loss=(2.5, 0.03)),
    ("relu", "he"): dict(factor=1.0, first=0.82, acc=0.93, loss=(2.7, 0.007)),
}


def world(**changes: dict) -> list[StudyRun]:
    """Every (activation, case) on every seed; `relu_he={"factor": 0.6}` changes one pair on every seed."""
    runs = []
    for (act, case), kw in TEXTBOOK.items():
        kw = {**kw, **changes.get(f"{act}_{case}".replace(" ", "_").replace(".", ""), {})}
        runs += [
            fake(act, case, seed, **{**kw, "factor": kw["factor"] * jitter}) for seed, jitter in zip(SEEDS, JITTER)
        ]
    return runs


def replace(runs: list[StudyRun], act: str, case: str, seed: str, new: StudyRun) -> list[StudyRun]:
    return [new if (r.values["model.activation"], r.case, r.seed) == (act, case, seed) else r for r in runs]


def check(found, words: str):
    """The one check whose name contains `words`."""
    (match,) = [c for c in found.checks if words in c.name]
    return match


def not_holding(found) -> list[str]:
    return [c.name for c in found.checks if c.outcome != HOLDS]


def test_textbook_numbers_support_the_claim(cfg):
    found = study.findings(world(), cfg)
    assert not_holding(found) == [] and verdict(found.checks).verdict == SUPPORTED
    assert len(found.checks) == 12
    assert len(found.rows) == 14 and {r["seeds"] for r in found.rows} == {3}  # the seeds folded per scheme
    assert len(found.series["runs.csv"]) == 42 and "init.png" in found.figures
    assert found.metrics["act_ratio/relu_he"] == pytest.approx(1.0, rel=0.1)
    assert found.metrics["learned/relu_he"] == 1.0 and found.metrics["learned/relu_zeros"] == 0.0


@pytest.mark.parametrize(
    "change, failing",
    [
        ({"relu_he": {"factor": 0.6}}, "he keeps relu's activation scale"),  # He letting ReLU's scale vanish
        ({"tanh_xavier": {"factor": 0.5}}, "xavier keeps tanh's activation scale"),  # Xavier shrinking like standard
        ({"relu_he": {"acc": 0.1, "loss": (2.3, 2.3), "labels": ("not_learning",)}}, "the relu net learns"),
        ({"tanh_xavier": {"acc": 0.1, "loss": (2.3, 2.3), "labels": ("not_learning",)}}, "the tanh net learns"),
        ({"relu_zeros": {"grad": 1e-3}}, "no weight ever gets a gradient"),  # a zeros + ReLU net that gets gradients
        ({"relu_zeros": {"acc": 0.9, "loss": (2.3, 0.1), "labels": ("symmetric",)}}, "zeros + relu never learns"),
        ({"tanh_constant": {"labels": ("healthy",)}, "relu_constant": {"labels": ("healthy",)}}, "constant leaves"),
        ({"tanh_normal_001": {"factor": 0.9}}, "too small (normal 0.01) makes tanh's"),  # too small, yet kept
        ({"tanh_normal_10": {"saturation": 0.1}}, "saturates tanh"),
        (
            {"relu_normal_10": {"factor": 1.0, "grad": 1.0, "acc": 0.9, "loss": (2.3, 0.1), "labels": ("healthy",)}},
            "explodes relu",
        ),
    ],
)
def test_numbers_that_contradict_a_part_fail_that_check(cfg, change, failing):
    found = study.findings(world(**change), cfg)
    assert check(found, failing).outcome == FAILS
    assert not_holding(found) == [check(found, failing).name]
    assert verdict(found.checks).verdict == PARTLY


def test_one_activation_left_symmetric_is_undecided_and_names_the_exceptions(cfg):
    found = study.findings(world(tanh_constant={"labels": ("healthy",)}), cfg)
    symmetric = check(found, "constant leaves")
    assert symmetric.outcome == UNDECIDED and symmetric.why == "not on tanh, seed 0, tanh, seed 1, tanh, seed 2"


def test_a_failed_run_leaves_its_checks_undecided_and_names_the_seed(cfg):
    runs = replace(world(), "relu", "he", "1", fake("relu", "he", "1", 1.0, status="FAILED"))
    found = study.findings(runs, cfg)
    for words in ("he keeps relu's", "the relu net learns"):
        assert check(found, words).outcome == UNDECIDED and "seed 1" in check(found, words).why
    assert len(not_holding(found)) == 2 and verdict(found.checks).verdict == PARTLY
    assert len(found.series["runs.csv"]) == 41


def test_seeds_that_disagree_leave_it_undecided(cfg):
    learner = fake("relu", "zeros", "2", **{**TEXTBOOK[("relu", "zeros")], "acc": 0.9, "labels": ("symmetric",)})
    found = study.findings(replace(world(), "relu", "zeros", "2", learner), cfg)
    assert check(found, "zeros + relu never learns").outcome == UNDECIDED
    assert check(found, "zeros + relu never learns").why == "not on seed 2"


def test_fewer_than_two_normal_stds_cannot_test_too_small_or_too_large(cfg):
    runs = [r for r in world() if r.case != "normal 0.01"]
    found = study.findings(runs, cfg)
    scale = check(found, "too small and too large")
    assert scale.outcome == UNDECIDED and "fewer than two normal stds" in scale.why
    assert not any("saturates tanh" in c.name for c in found.checks)


def test_no_runs_at_all_is_undecided_without_a_crash(cfg):
    found = study.findings([], cfg)
    assert verdict(found.checks).verdict == UNDECIDED and found.rows == []


def test_a_diverged_run_has_no_test_acc_and_counts_as_not_learning(cfg):
    relu_large = [r for r in world() if r.case == "normal 1.0" and r.values["model.activation"] == "relu"]
    assert all(r.diverged and not r.learned for r in relu_large)
    row = study.row(relu_large[0])
    assert math.isnan(row["test acc"]) and row["verdict"] == "diverged,exploding"
    assert row["act std last/first at init"] == pytest.approx(5.66 ** (DEPTH - 1))


def test_the_thresholds_come_from_the_yaml(cfg):
    cfg = cfg.copy()
    cfg.study.checks.kept = 1.5  # xavier + tanh drifts 0.89^7 ~ 2.2x: not within 1.5x of 1
    found = study.findings(world(), cfg)
    assert check(found, "xavier keeps tanh's").outcome == FAILS and check(found, "he keeps relu's").outcome == HOLDS


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("init", tmp_path, "study.n_jobs=1")
    folder = tmp_path / "reports" / "init"
    assert result["runs"] == 6 and result["failed"] == 0  # 3 smoke cases x tanh, relu; a diverged run is FINISHED
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["finished"] == 6 and summary["seeds"] == ["0"] and len(summary["checks"]) == 9
    outcome = {c["name"]: c for c in summary["checks"]}

    def named(words: str) -> dict:
        (match,) = [c for name, c in outcome.items() if words in name]
        return match

    # zeros: identical units and no gradient whatever the size
    assert named("zeros leaves")["outcome"] == HOLDS and named("no weight ever gets")["outcome"] == HOLDS
    # the smoke cases leave out constant, the small normal and xavier: those checks are undecided, never decided
    constant = named("constant leaves")
    assert constant["outcome"] == UNDECIDED and constant["why"] == "runs missing: no run"
    assert named("too small and too large")["outcome"] == UNDECIDED
    assert named("xavier keeps")["outcome"] == UNDECIDED
    assert summary["verdict"] == PARTLY
    for name in ("summary.md", "metrics.json", "init.png", "runs.csv"):
        assert (folder / name).is_file()
