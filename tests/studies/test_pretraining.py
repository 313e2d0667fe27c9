"""Study `pretraining`: its checks on hand-built runs (per seed), and the smoke study end to end (slow)."""

from __future__ import annotations

import json
import math

import pytest
from mlflow import MlflowClient

from pipeline.analysis.diagnosis import diagnose
from pipeline.studies import pretraining as study
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from pipeline.studies.measures import thresholds
from tests.helpers import config, run_study, tmp_store

SEEDS = (0, 1, 2)
DEPTHS = (3, 5, 8)
REGIMES = ("null", "100")
CHANCE_ACC, CHANCE_LOSS = 0.1, math.log(10)  # digits: ten balanced classes
# textbook test accuracies and first-layer gradients before fine-tuning, at the deep depths
TEXTBOOK = {
    "sigmoid random": (0.10, 1e-6),
    "sigmoid pretrained": (0.88, 1e-4),
    "tanh random": (0.93, 0.05),
    "tanh pretrained": (0.94, 0.08),
    "relu he": (0.95, 0.3),
    "sigmoid bn": (0.94, 0.02),
}


@pytest.fixture(scope="module")
def cfg():
    return config("study=pretraining", hydra=True)


@pytest.fixture(scope="module")
def lim(cfg):
    return thresholds(cfg, *study.LIMITS)


def fake(case: str, depth: int, labels: str, seed: int, acc: float | None, grad: float, status="FINISHED"):
    """A finetune job's run; acc None = diverged. Labelled as analysis.diagnosis labels real runs: the final
    loss follows the accuracy (at chance: the constant predictor's loss)."""
    values = {"model.depth": str(depth), "data.n_labeled": labels, "seed": str(seed)}
    metrics = {"data/chance_acc": CHANCE_ACC, "data/chance_loss": CHANCE_LOSS, "train/initial_loss": 2.3}
    if acc is None:
        metrics["diverged_at_step"] = 2.0
    else:
        end = CHANCE_LOSS * (1.0 if acc <= CHANCE_ACC + 0.05 else 1 - acc)
        metrics.update({"test/acc": acc, "train/final_loss": end, study.START_GRAD: grad})
    labels_of = diagnose(metrics, None, acc is None)
    label = f"{case} model.depth={depth} data.n_labeled={labels} seed={seed}"
    return StudyRun(label, values, status, "id", labels_of, metrics, {}, case=case)


def runs(overrides: dict | None = None, cases=tuple(TEXTBOOK)) -> list[StudyRun]:
    """Every case x depth x label regime x seed; `overrides[(case, depth, labels, seed)] = (acc, grad)`."""
    out = []
    for case in cases:
        for depth in DEPTHS:
            for labels in REGIMES:
                for seed in SEEDS:
                    acc, grad = TEXTBOOK[case]
                    if depth == 3 and case == "sigmoid random":  # shallow enough to learn from random init
                        acc, grad = 0.9, 1e-3
                    acc = acc + 0.01 * seed if acc > 0.5 else acc
                    acc, grad = (overrides or {}).get((case, depth, labels, seed), (acc, grad * (1 + 0.1 * seed)))
                    out.append(fake(case, depth, labels, seed, acc, grad))
    return out


def check(found, start: str, depth: int, labels: str = "every label"):
    """The check whose name starts with `start` at one depth and label regime."""
    mine = [c for c in found.checks if c.name.startswith(start) and c.name.endswith(f"(depth {depth}, {labels})")]
    assert len(mine) == 1, [c.name for c in found.checks]
    return mine[0]


def test_textbook_runs_support_every_check_at_the_deep_depths_only(cfg, lim):
    found = study.findings(runs(), cfg)
    assert {c.outcome for c in found.checks} == {HOLDS}, [(c.name, c.measured, c.why) for c in found.checks]
    deep = [d for d in DEPTHS if d >= lim["deep_from"]]
    assert deep == [5, 8] and verdict(found.checks).verdict == SUPPORTED
    assert len(found.checks) == len(REGIMES) * len(deep) * 6  # no check at depth 3, where random sigmoid learns
    assert not [c for c in found.checks if "depth 3" in c.name]
    assert {c.name.rsplit("(", 1)[1] for c in found.checks} >= {"depth 5, every label)", "depth 8, 100 labels)"}
    assert len(found.rows) == len(TEXTBOOK) * len(DEPTHS) * len(REGIMES) and {r["seeds"] for r in found.rows} == {3}
    assert found.metrics["test_acc/sigmoid_random_d8_all"] == pytest.approx(0.10)
    assert found.metrics["start_grad/sigmoid_pretrained_d5_100"] == pytest.approx(1e-4 * (1.0 * 1.1 * 1.2) ** (1 / 3))
    assert "pretraining.png" in found.figures and len(found.series["runs.csv"]) == len(runs())


def test_pretraining_that_does_not_help_fails_its_parts(cfg):
    # at depth 8 the pretrained net stays at chance with random init's gradient, on every seed
    stuck = {("sigmoid pretrained", 8, labels, s): (0.10, 1e-6 * (1 + 0.1 * s)) for labels in REGIMES for s in SEEDS}
    found = study.findings(runs(stuck), cfg)
    for labels in ("every label", "100 labels"):
        assert check(found, "pretrained, the sigmoid net learns", 8, labels).outcome == FAILS
        assert check(found, "pretraining multiplies", 8, labels).outcome == FAILS
        assert check(found, "... its test acc minus", 8, labels).outcome == FAILS
        assert check(found, "ReLU with He's init is as good", 8, labels).outcome == HOLDS  # trivially, and so says
        assert check(found, "pretrained, the sigmoid net learns", 5, labels).outcome == HOLDS
    assert str(verdict(found.checks)) == f"{PARTLY} (18 of 24)"


def test_a_random_sigmoid_net_that_learns_contradicts_the_claim(cfg):
    learns = {("sigmoid random", 5, "null", s): (0.8 + 0.01 * s, 1e-4) for s in SEEDS}
    found = study.findings(runs(learns), cfg)
    assert check(found, "random standard init", 5).outcome == FAILS
    assert check(found, "random standard init", 5, "100 labels").outcome == HOLDS
    assert check(found, "... its test acc minus", 5).outcome == FAILS


def test_a_fix_that_falls_short_fails_as_good(cfg, lim):
    short = {("sigmoid bn", 8, "100", s): (0.88 - 2 * lim["as_good"] + 0.01 * s, 0.02) for s in SEEDS}
    found = study.findings(runs(short), cfg)
    assert check(found, "batch norm in the sigmoid net is as good", 8, "100 labels").outcome == FAILS
    assert check(found, "batch norm in the sigmoid net is as good", 8).outcome == HOLDS


def test_seeds_that_disagree_or_a_missing_run_leave_it_undecided(cfg):
    found = study.findings(runs({("sigmoid pretrained", 5, "null", 1): (0.10, 1e-6)}), cfg)
    learns = check(found, "pretrained, the sigmoid net learns", 5)
    assert learns.outcome == UNDECIDED and learns.why == "not on seed 1"
    all_runs = runs()
    gone = next(r for r in all_runs if r.case == "sigmoid random" and r.values["model.depth"] == "8" and r.seed == "2")
    gone.status = "KILLED"
    found = study.findings(all_runs, cfg)
    grad = check(found, "pretraining multiplies", 8)
    assert grad.outcome == UNDECIDED and "seed 2" in grad.why
    assert verdict(found.checks).verdict == PARTLY


def test_a_size_without_the_fixes_or_deep_nets_leaves_those_parts_undecided(cfg):
    found = study.findings(runs(cases=("sigmoid random", "sigmoid pretrained")), cfg)
    relu = check(found, "ReLU with He's init is as good", 5)
    assert relu.outcome == UNDECIDED and "no relu he run" in relu.why
    shallow = [r for r in runs() if r.values["model.depth"] == "3"]
    assert [c.outcome for c in study.findings(shallow, cfg).checks] == [UNDECIDED]
    assert study.findings([], cfg).checks[0].outcome == UNDECIDED


def test_a_diverged_run_counts_as_chance():
    run = fake("relu he", 8, "null", 0, None, 0.3)
    assert run.diverged and not run.learned and study.accuracy(run) == CHANCE_ACC
    assert study.labels_of(run) == "every label" and study.labels_of(fake("relu he", 8, "100", 0, 0.9, 1)) == (
        "100 labels"
    )


@pytest.mark.slow
def test_smoke_study_end_to_end_pretrains_then_fine_tunes_and_resumes(tmp_path):
    result = run_study("pretraining", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "pretraining"
    assert result["runs"] == 12 and result["failed"] == 0  # 6 cases x depth 2, 5; 100 labels
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == result["verdict"] and summary["finished"] == 12
    assert len(summary["checks"]) == 6 and all(c["outcome"] in (HOLDS, FAILS, UNDECIDED) for c in summary["checks"])
    assert (folder / "pretraining.png").read_bytes()[:4] == b"\x89PNG" and (folder / "runs.csv").is_file()
    client = MlflowClient(tmp_store(tmp_path))
    children = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.mlflow.parentRunId = '{result['parent_run_id']}'"
    )
    jobs = [r for r in children if r.data.tags["stage"] == "finetune"]
    pre = {r.info.run_id: r for r in children if r.data.tags["stage"] == "pretrain"}
    assert len(jobs) == 12 and len(pre) == 4  # the two pretrained cases at two depths
    for job in jobs:
        assert job.data.params["data.n_labeled"] == "100" and study.START_GRAD in job.data.metrics
        source = job.data.tags.get("init_source_run")
        assert (source in pre) == job.data.tags["study_case"].endswith("pretrained")
        if source:
            assert pre[source].info.run_name == f"{job.info.run_name} pretrain"
    # the pretrain runs share the parent but are no jobs: run again, every job is done and nothing reruns
    again = run_study("pretraining", tmp_path, "study.n_jobs=1")
    assert again["ran"] == 0 and again["skipped"] == 12 and again["verdict"] == result["verdict"]
