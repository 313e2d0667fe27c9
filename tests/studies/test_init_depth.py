"""Study `init_depth`: its checks on hand-built init-stage runs, and the smoke study end to end."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.studies import init_depth as study
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from tests.helpers import config, run_study

DEPTH = 30
SEEDS = ("0", "1", "2")
JITTER = (1.0, 1.002, 0.998)  # per seed, on the per-layer factor: a seed spread (~6% at layer 30)
# per pair: (activation, init, act std per-layer factor) as the papers describe them
TEXTBOOK = {
    "tanh standard": ("tanh", "standard", 0.58),
    "tanh xavier": ("tanh", "xavier_normal", 0.96),
    "relu xavier": ("relu", "xavier_normal", 0.707),
    "relu he": ("relu", "he_normal", 1.0),
}


@pytest.fixture(scope="module")
def cfg():
    return config("study=init_depth", hydra=True)


def fake(
    pair: str,
    seed: str,
    factor: float,
    theory_factor: float | None = None,
    first: float = 0.5,
    status: str = "FINISHED",
) -> StudyRun:
    """An init-stage run of `pair` whose act std changes by `factor` per hidden layer (the theory's by
    `theory_factor`, default the same); its dL/dz std shrinks toward the input as the acts do."""
    activation, init, _ = TEXTBOOK[pair]
    theory_factor = factor if theory_factor is None else theory_factor
    metrics = {}
    for i in range(1, DEPTH + 2):  # the hidden layers, then the output layer
        key = f"layer_{i:02d}"
        metrics[f"act_std/{key}"] = first * factor ** (i - 1)
        metrics[f"theory_act_var/{key}"] = (first * theory_factor ** (i - 1)) ** 2
        metrics[f"grad_std/{key}"] = 1e-4 * factor ** (DEPTH - i)
    verdict = ["vanishing"] if factor ** (DEPTH - 1) < 1e-3 else ["healthy"]
    return StudyRun(
        f"{pair} seed={seed}",
        {"model.activation": activation, "init": init, "seed": seed},
        status,
        "id",
        verdict if status == "FINISHED" else [],
        metrics if status == "FINISHED" else {},
        case=pair,
    )


def textbook(**factors: float) -> list[StudyRun]:
    """Every pair on every seed; `relu_he=0.8` gives a pair another per-layer factor on every seed."""
    runs = []
    for pair, (_, _, factor) in TEXTBOOK.items():
        factor = factors.get(pair.replace(" ", "_"), factor)
        runs += [fake(pair, seed, factor * jitter) for seed, jitter in zip(SEEDS, JITTER)]
    return runs


def outcomes(found) -> dict[str, str]:
    return {c.name: c.outcome for c in found.checks}


def check(found, words: str):
    """The one check whose name contains `words`."""
    (match,) = [c for c in found.checks if words in c.name]
    return match


def test_textbook_numbers_support_the_claim(cfg):
    found = study.findings(textbook(), cfg)
    assert set(outcomes(found).values()) == {HOLDS}, outcomes(found)
    assert verdict(found.checks).verdict == SUPPORTED and len(found.checks) == 6
    assert found.metrics["act_ratio/relu_xavier"] == pytest.approx(0.707**29, rel=0.05)
    assert found.metrics["theory_gap/relu_he"] == pytest.approx(1.0)
    assert len(found.rows) == 4 and [r["seeds"] for r in found.rows] == [3] * 4  # the seeds folded per pair
    assert len(found.series["runs.csv"]) == 12 and "init_depth.png" in found.figures


@pytest.mark.parametrize(
    "pair, factor, theory_factor, failing",
    [
        ("relu he", 0.8, None, "relu + he keeps it"),  # He's init vanishing as well
        ("relu xavier", 0.9, None, "relu + xavier halves"),  # Xavier's ReLU net barely shrinking
        ("tanh standard", 0.9, None, "tanh + standard: activations shrink"),  # shrinking, but only to 0.9^29 ~ 0.05
        ("tanh xavier", 0.8, None, "tanh + xavier keeps"),
        ("relu he", 1.0, 0.95, "mean-field prediction"),  # off the theory by 0.95^-29 ~ 4x at the last layer
    ],
)
def test_numbers_that_contradict_a_part_fail_that_check(cfg, pair, factor, theory_factor, failing):
    runs = [fake(r.case, r.seed, factor, theory_factor) if r.case == pair else r for r in textbook()]
    found = study.findings(runs, cfg)
    assert check(found, failing).outcome == FAILS
    assert verdict(found.checks).verdict == PARTLY
    assert [n for n, o in outcomes(found).items() if o != HOLDS] == [check(found, failing).name]


def test_a_pair_that_grows_instead_of_keeping_fails_too(cfg):
    # "near 1" counts either way: 1.05 per layer grows 4x over 29 layers
    found = study.findings(textbook(relu_he=1.05), cfg)
    assert check(found, "relu + he keeps it").outcome == FAILS


def test_a_failed_run_leaves_its_checks_undecided_and_names_the_seed(cfg):
    runs = [
        fake("relu he", "1", 1.0, status="FAILED") if (r.case, r.seed) == ("relu he", "1") else r for r in textbook()
    ]
    found = study.findings(runs, cfg)
    for words in ("relu + he keeps it", "mean-field prediction"):
        assert check(found, words).outcome == UNDECIDED and check(found, words).why == "runs missing: seed 1"
    assert verdict(found.checks).verdict == PARTLY and len(found.series["runs.csv"]) == 11


def test_seeds_that_disagree_leave_it_undecided(cfg):
    runs = [fake("relu he", "2", 0.8) if (r.case, r.seed) == ("relu he", "2") else r for r in textbook()]
    found = study.findings(runs, cfg)
    assert check(found, "relu + he keeps it").outcome == UNDECIDED
    assert "holds on 2 of 3" in check(found, "relu + he keeps it").why


def test_no_runs_at_all_is_undecided_without_a_crash(cfg):
    found = study.findings([], cfg)
    assert verdict(found.checks).verdict == UNDECIDED and found.rows == []


def test_non_finite_or_missing_values_do_not_crash(cfg):
    runs = textbook()
    runs[0].metrics["act_std/layer_30"] = math.inf  # tanh standard, seed 0: no ratio
    runs[3].metrics = {k: v for k, v in runs[3].metrics.items() if not k.startswith("theory")}  # not predicted
    found = study.findings(runs, cfg)
    assert check(found, "mean-field prediction").outcome == UNDECIDED
    assert check(found, "tanh + standard: activations shrink").outcome == UNDECIDED


def test_delta_std_ratio_is_the_dz_std_of_the_first_hidden_layer_over_the_last():
    run = fake("relu xavier", "0", 0.707)
    first, last = run.metrics["grad_std/layer_01"], run.metrics[f"grad_std/layer_{DEPTH:02d}"]
    assert study.delta_std_ratio(run) == pytest.approx(first / last)
    assert math.isnan(study.delta_std_ratio(StudyRun("x", {}, "FINISHED")))  # no dL/dz logged: no ratio


def test_the_thresholds_come_from_the_yaml(cfg):
    cfg = cfg.copy()
    cfg.study.checks.near_one = 1.2  # a stricter "near 1": the textbook's He pair (1.0 per layer) still keeps it
    assert check(study.findings(textbook(), cfg), "relu + he keeps it").outcome == HOLDS
    cfg.study.checks.near_one = 1.0  # nothing is strictly within a factor 1 of 1 but 1 itself
    assert check(study.findings(textbook(relu_he=1.002), cfg), "relu + he keeps it").outcome == FAILS


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("init_depth", tmp_path, "study.n_jobs=1")
    folder = tmp_path / "reports" / "init_depth"
    assert result["runs"] == 4 and result["failed"] == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["finished"] == 4 and summary["seeds"] == ["0"] and len(summary["checks"]) == 6
    outcome = {c["name"]: c["outcome"] for c in summary["checks"]}
    # 6 layers are too few for the depth-30 thresholds: relu + xavier loses only ~0.71^5 ~ 0.18 of its scale
    relu_xavier = next(c for c in summary["checks"] if c["name"].startswith("relu + xavier"))
    assert relu_xavier["outcome"] == FAILS and relu_xavier["values"]["seed 0"] > 1e-3
    assert outcome[next(n for n in outcome if "mean-field" in n)] == HOLDS  # even 6 x 32 follows the line
    assert summary["verdict"] == PARTLY
    for name in ("summary.md", "metrics.json", "init_depth.png", "runs.csv"):
        assert (folder / name).is_file()
