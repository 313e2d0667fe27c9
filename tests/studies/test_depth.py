"""Study `depth`: its checks on fabricated runs, and the smoke study end to end (the default suite's one)."""

import json

import pytest

from pipeline.studies import depth as study
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from tests.helpers import config, run_study

DEPTHS = (2, 6, 10)
# per-layer gradient factor and per-layer signal factor at init of each case, as the theory says
TEXTBOOK = {"sigmoid": (0.25, 0.9), "tanh": (0.95, 0.9), "relu": (1.0, 0.71), "relu he": (1.0, 1.0)}


def fake(case: str, depth: int, seed: int, grad_factor: float, signal_factor: float, learned: bool) -> StudyRun:
    """A finished run whose first-layer gradient is grad_factor^depth of the output layer's."""
    layers = depth + 1
    history = {
        f"grad_norm/layer_{i:02d}": [(10, 1.0 if i == layers else grad_factor**depth)] for i in range(1, layers + 1)
    }
    history |= {f"act_std/layer_{i:02d}": [(0, signal_factor ** (i - 1))] for i in range(1, layers + 1)}
    labels = ["healthy"] if learned else ["not_learning"]
    metrics = {"test/acc": 0.9 if learned else 0.1, "data/chance_acc": 0.1}
    activation = "relu" if case.startswith("relu") else case
    return StudyRun(
        f"{case} d{depth} s{seed}",
        {"model.activation": activation, "model.depth": str(depth), "seed": str(seed)},
        "FINISHED",
        "id",
        labels,
        metrics,
        history,
        case=case,
    )


def runs(overrides: dict | None = None, seeds=(0, 1, 2)) -> list[StudyRun]:
    """Every case x depth x seed; `overrides[(case, depth, seed)] = dict(...)` changes one run."""
    out = []
    for case, (g, s) in TEXTBOOK.items():
        for d in DEPTHS:
            for seed in seeds:
                args = {
                    "grad_factor": g * (1 + 0.01 * seed),
                    "signal_factor": s,
                    "learned": not (d == max(DEPTHS) and case in ("sigmoid", "relu")),
                }
                args.update((overrides or {}).get((case, d, seed), {}))
                out.append(fake(case, d, seed, **args))
    return out


@pytest.fixture(scope="module")
def cfg():
    return config("study=depth", hydra=True)


def outcomes(found) -> dict[str, str]:
    return {c.name: c.outcome for c in found.checks}


def test_textbook_runs_support_every_check(cfg):
    found = study.findings(runs(), cfg)
    assert set(outcomes(found).values()) == {HOLDS}, [(c.name, c.measured, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED and len(found.checks) == 9
    assert found.metrics["per_layer_factor/sigmoid"] == pytest.approx(0.25, rel=0.02)
    assert len(found.rows) == len(TEXTBOOK) * len(DEPTHS) and found.rows[0]["seeds"] == 3
    assert len(found.series["runs.csv"]) == len(TEXTBOOK) * len(DEPTHS) * 3


def test_a_deep_relu_xavier_net_that_learns_contradicts_that_part(cfg):
    learned = {("relu", 10, s): {"learned": True} for s in range(3)}
    found = study.findings(runs(learned), cfg)
    failing = [n for n, o in outcomes(found).items() if o == FAILS]
    assert failing == ["relu with Xavier init does not learn at depth 10 although its gradient ratio holds"]
    assert str(verdict(found.checks)) == f"{PARTLY} (8 of 9)"


def test_seeds_that_disagree_on_learning_leave_it_undecided(cfg):
    found = study.findings(runs({("sigmoid", 10, 1): {"learned": True}}), cfg)
    check = next(c for c in found.checks if c.name.startswith("the deepest sigmoid net"))
    assert check.outcome == UNDECIDED and check.why == "not on seed 1"


def test_a_missing_run_makes_its_checks_undecided(cfg):
    all_runs = runs()
    gone = next(r for r in all_runs if r.case == "tanh" and r.values["model.depth"] == "6" and r.seed == "2")
    gone.status = "KILLED"
    found = study.findings(all_runs, cfg)
    tanh = next(c for c in found.checks if c.name.startswith("tanh (xavier) keeps it"))
    assert tanh.outcome == UNDECIDED and "seed 2" in tanh.why
    assert verdict(found.checks).verdict == PARTLY


def test_a_sigmoid_gradient_that_does_not_shrink_fails(cfg):
    flat = {("sigmoid", d, s): {"grad_factor": 0.97} for d in DEPTHS for s in range(3)}
    found = study.findings(runs(flat), cfg)
    assert (
        outcomes(found)["sigmoid's first-layer gradient shrinks geometrically with depth (bound 0.25 per layer)"]
        == FAILS
    )


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("depth", tmp_path)
    assert result["runs"] == 8 and result["failed"] == 0 and result["ran"] == 8
    summary = json.loads((tmp_path / "reports" / "depth" / "summary.json").read_text())
    assert summary["verdict"] == result["verdict"] and len(summary["checks"]) == 9
    assert all(c["outcome"] in (HOLDS, FAILS, UNDECIDED) for c in summary["checks"])
    # the claim's first check is measured on the real runs: sigmoid's gradient shrinks far faster than tanh's
    assert summary["checks"][0]["outcome"] == HOLDS
    md = (tmp_path / "reports" / "depth" / "summary.md").read_text()
    assert md.index("| check |") < md.index("| case |") and "![depth](depth.png)" in md
    assert (tmp_path / "reports" / "depth" / "depth.png").read_bytes()[:4] == b"\x89PNG"
