"""Study `regularization`: the smoke study end to end, and the report's checks on hand-built runs."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.studies import regularization as reg
from pipeline.studies.base import StudyRun
from tests.helpers import config, run_study

SGD_LR, ADAM_LR = 0.1, 0.001
LAMS = (0.001, 0.01, 0.1)


def fake(optimizer: str, penalty: str | None = None, lam: float | None = None, *, train: float = 1.0,
         test: float = 0.70, norm: float = 30.0, sparsity: float = 0.01, status: str = "FINISHED",
         verdict: tuple[str, ...] = ("healthy",)) -> StudyRun:
    """A finished run with the final numbers the report reads (weight norm split over two layers)."""
    values = {"optimizer": optimizer}
    if penalty == "decay":
        values["optimizer.weight_decay"] = str(lam)
    elif penalty is not None:
        values.update({"regularizer": penalty, "regularizer.strength": str(lam)})
    layer = norm / math.sqrt(2)
    metrics = {"train/acc": train, "test/acc": test, "sparsity/total": sparsity,
               "weight_norm/layer_01": layer, "weight_norm/layer_02": layer,
               "lr": SGD_LR if optimizer == "sgd" else ADAM_LR}
    if "diverged" in verdict:
        metrics = {"train/acc": math.nan, "diverged_at_step": 3.0, "lr": metrics["lr"]}
    return StudyRun(" ".join(f"{k}={v}" for k, v in values.items()), values, status, verdict=list(verdict),
                    metrics=metrics if status == "FINISHED" else {})


def textbook() -> list[StudyRun]:
    """Runs that behave as the claim says."""
    runs = [fake("sgd", test=0.67, train=1.0, norm=32, sparsity=0.01)]
    # l1: sparser with λ (0.001 and 0.01 have lr·λ <= 1e-3); helps at 0.01; collapses at 0.1
    runs += [fake("sgd", "l1", 0.001, test=0.67, norm=25, sparsity=0.40),
             fake("sgd", "l1", 0.01, train=0.85, test=0.72, norm=6, sparsity=0.98),
             fake("sgd", "l1", 0.1, train=0.34, test=0.34, norm=1.5, sparsity=0.10)]
    for p in ("l2", "decay"):  # the same update under SGD: identical numbers
        runs += [fake("sgd", p, 0.001, test=0.67, norm=31, sparsity=0.01),
                 fake("sgd", p, 0.01, train=0.97, test=0.71, norm=20, sparsity=0.013),
                 fake("sgd", p, 0.1, train=0.34, test=0.34, norm=2.0, sparsity=0.4)]
    runs += [fake("adam", test=0.69, norm=33)]
    runs += [fake("adam", "l2", lam, norm=n) for lam, n in zip(LAMS, (25, 11, 7))]
    runs += [fake("adamw", "decay", lam, norm=n) for lam, n in zip(LAMS, (33.2, 33.1, 31.8))]
    return runs


def replace(runs: list[StudyRun], label: str, **changes) -> list[StudyRun]:
    """The runs with one run's numbers changed."""
    out = []
    for r in runs:
        if r.label == label:
            args = dict(optimizer=r.values["optimizer"])
            penalty = r.values.get("regularizer") or ("decay" if "optimizer.weight_decay" in r.values else None)
            lam = r.values.get("regularizer.strength") or r.values.get("optimizer.weight_decay")
            r = fake(args["optimizer"], penalty, None if lam is None else float(lam), **{
                "train": r.get("train/acc"), "test": r.get("test/acc"), "norm": reg.weight_norm(r),
                "sparsity": r.get("sparsity/total"), **changes})
        out.append(r)
    return out


def outcome(result, name_start: str):
    """The note line of the check whose name starts with name_start."""
    lines = [n for n in result.notes if n.startswith("- " + name_start)]
    assert len(lines) == 1, result.notes
    return lines[0]


@pytest.fixture(scope="module")
def cfg():
    return config("study=regularization")


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("regularization", tmp_path)
    folder = tmp_path / "reports" / "regularization"
    for name in ("summary.md", "metrics.json", "regularization.png"):
        assert (folder / name).is_file()
    assert result["runs"] == 4 and result["failed"] == 0
    summary = (folder / "summary.md").read_text()
    assert "| optimizer | method | λ | seed | train acc | test acc | gap | weight norm | sparsity |" in summary
    assert sum(line.startswith(("| sgd |", "| adam |", "| adamw |")) for line in summary.splitlines()) == 4
    # the one check a 1-epoch smoke run can already decide: SGD's l2 and weight decay are the same update
    assert "- SGD: l2(λ) and weight_decay=λ end at the same weights: yes" in summary
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"] == 4 and metrics["l2_vs_decay_norm_diff/sgd"] == 0.0


def test_setting_reads_method_and_strength(cfg):
    assert reg.setting(fake("sgd", "l1", 0.01), cfg) == reg.Setting("sgd", "l1", 0.01)
    assert reg.setting(fake("sgd", "decay", 0.1), cfg) == reg.Setting("sgd", "decay", 0.1)
    assert reg.setting(fake("adamw", "decay", 0.1), cfg) == reg.Setting("adam", "decay", 0.1)
    assert reg.setting(fake("adam", "decay", 0.1), cfg) == reg.Setting("adam", "coupled decay", 0.1)
    assert reg.setting(fake("adam"), cfg) == reg.Setting("adam", "none", 0.0)
    # adamw not given a weight_decay: its own default (0.01 in conf/optimizer/adamw.yaml)
    assert reg.setting(StudyRun("x", {"optimizer": "adamw"}, "FINISHED"), cfg) == reg.Setting("adam", "decay", 0.01)
    # a penalty of strength 0 is no penalty; without a config, sgd and none are assumed
    assert reg.setting(fake("sgd", "l2", 0.0)) == reg.Setting("sgd", "none", 0.0)
    assert reg.setting(StudyRun("x", {"regularizer": "l1"}, "FINISHED")) == reg.Setting("sgd", "l1", 1e-4)


def test_textbook_numbers_are_supported(cfg):
    result = reg.report(textbook(), cfg)
    assert result.supported is True, result.notes
    assert len(result.rows) == 17
    assert "regularization.png" in result.figures
    assert result.metrics["sparsity/sgd/l1/0.01"] == pytest.approx(0.98)
    assert result.metrics["l2_vs_decay_norm_diff/sgd"] == 0.0


def test_l1_that_does_not_sparsify_is_not_supported(cfg):
    runs = replace(textbook(), "optimizer=sgd regularizer=l1 regularizer.strength=0.01", sparsity=0.2)
    result = reg.report(runs, cfg)
    assert result.supported is False
    assert ": no (" in outcome(result, "SGD: l1's sparsity")


def test_adam_l2_equal_to_adamw_is_not_supported(cfg):
    runs = textbook()
    for lam, n in zip(LAMS, (25, 11, 7)):  # AdamW ends exactly where Adam + l2 does
        runs = replace(runs, f"optimizer=adamw optimizer.weight_decay={lam}", norm=n)
    result = reg.report(runs, cfg)
    assert result.supported is False
    assert ": no (" in outcome(result, "Adam: l2(λ) and AdamW(λ) differ")


def test_regularizer_that_never_helps_is_not_supported(cfg):
    runs = replace(textbook(), "optimizer=sgd regularizer=l2 regularizer.strength=0.01", test=0.60)
    runs = replace(runs, "optimizer=sgd optimizer.weight_decay=0.01", test=0.60)
    result = reg.report(runs, cfg)
    assert result.supported is False
    assert ": no (" in outcome(result, "SGD: l1 and l2 each shrink the gap")


def test_sgd_l2_and_decay_that_differ_is_not_supported(cfg):
    runs = replace(textbook(), "optimizer=sgd optimizer.weight_decay=0.1", norm=2.5)
    result = reg.report(runs, cfg)
    assert result.supported is False
    assert ": no (" in outcome(result, "SGD: l2(λ) and weight_decay=λ")


def test_subsets_missing_failed_and_diverged_runs_leave_checks_undecided(cfg):
    # only SGD l1 runs, one failed and one diverged: nothing but the l1 checks can be decided
    runs = [fake("sgd", test=0.67, sparsity=0.01), fake("sgd", "l1", 0.001, sparsity=0.4),
            fake("sgd", "l1", 0.01, sparsity=0.98), fake("sgd", "l1", 0.03, status="FAILED"),
            fake("sgd", "l1", 0.3, verdict=("diverged",))]
    result = reg.report(runs, cfg)
    assert result.supported is None
    assert ": yes (" in outcome(result, "SGD: l1's sparsity")
    assert ": - (" in outcome(result, "Adam: l2(λ) and AdamW(λ) differ")
    assert len(result.rows) == 4  # the failed run has no row; the diverged one shows no accuracy
    assert reg.report([], cfg).supported is None
    assert reg.report([fake("adam", "l2", 0.01)], None).supported is None  # one λ: a figure without warnings
