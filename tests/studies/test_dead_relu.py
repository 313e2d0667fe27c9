"""Study `dead_relu`: its checks on hand-built runs (per seed), and the smoke study end to end (slow)."""

from __future__ import annotations

import json

import pytest

from pipeline.analysis.diagnosis import diagnose
from pipeline.studies import dead_relu
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, NOT_SUPPORTED, PARTLY, SUPPORTED, UNDECIDED, verdict
from tests.helpers import config, run_study

SEEDS = (0, 1, 2)
CHANCE = 1 / 3  # spiral: three balanced classes

# per case: the dead share measured at step 0, 100 and 200 (the last one + 0.01 x seed), and the test accuracy
TEXTBOOK = {
    "baseline": ([0.08, 0.05, 0.03], 0.77),
    "high_lr": ([0.08, 0.6, 0.7], CHANCE),
    "large_init": ([0.08, 0.3, 0.4], 0.40),
    "neg_bias": ([0.42, 0.4, 0.35], 0.50),
    "high_lr+leaky": ([0.08, 0.8, 0.8], 0.72),
    "large_init+leaky": ([0.08, 0.3, 0.3], 0.75),
    "neg_bias+leaky": ([0.42, 0.35, 0.3], 0.70),
    "large_init+adam": ([0.08, 0.09, 0.08], 0.68),
    "large_init+adagrad": ([0.08, 0.07, 0.07], 0.70),
    "neg_bias+adam": ([0.42, 0.4, 0.33], 0.60),
}


@pytest.fixture(scope="module")
def cfg():
    return config("study=dead_relu", hydra=True)


@pytest.fixture(scope="module")
def case_values(cfg):
    """{case: its overrides as a job's values}, from the study's own YAML."""
    return {c.name: {k: str(v) for k, v in c.items() if k != "name"} for c in cfg.study.cases}


def fake(
    case: str,
    seed: int,
    dead: list[float],
    acc: float,
    values: dict[str, str],
    diverged: bool = False,
    status: str = "FINISHED",
) -> StudyRun:
    """A run of `case` whose dead share was probed at steps 0, 100, 200... (two hidden layers), labelled as
    analysis.diagnosis labels real runs; its training loss fell far when it learned, barely when not."""
    hist = [(100 * i, v) for i, v in enumerate(dead)]
    metrics = {
        "train/initial_loss": 1.1,
        "data/chance_acc": CHANCE,
        "dead_relu/total": dead[-1],
        "dead_relu/layer_01": dead[-1] / 2,
        "dead_relu/layer_02": min(1.0, 1.5 * dead[-1]),
    }
    if diverged:
        metrics["diverged_at_step"] = 100.0 * len(dead)
    else:
        metrics.update({"train/final_loss": 1.1 * (0.4 if acc > 0.6 else 0.95), "test/acc": acc})
    history = {
        "dead_relu/total": hist,
        "dead_relu/layer_01": [(s, v / 2) for s, v in hist],
        "dead_relu/layer_02": [(s, min(1.0, 1.5 * v)) for s, v in hist],
    }
    return StudyRun(
        f"{case} seed={seed}",
        {**values, "seed": str(seed)},
        status,
        f"id-{case}-{seed}",
        diagnose(metrics, None, diverged),
        metrics,
        history,
        case=case,
    )


def textbook(case_values, **override: tuple[list[float], float]) -> list[StudyRun]:
    """Every case on every seed; `override` (case with + written __) replaces a case's numbers on every seed."""
    numbers = {**TEXTBOOK, **{k.replace("__", "+"): v for k, v in override.items()}}
    return [
        fake(case, s, dead[:-1] + [dead[-1] + 0.01 * s], acc - 0.01 * s, case_values[case])
        for case, (dead, acc) in numbers.items()
        for s in SEEDS
    ]


def replaced(runs: list[StudyRun], *new: StudyRun) -> list[StudyRun]:
    """`runs` with the runs of the same case and seed as `new` swapped for them."""
    key = {(r.case, r.seed) for r in new}
    return [r for r in runs if (r.case, r.seed) not in key] + list(new)


def check(found, start: str):
    """The check whose name starts with `start`."""
    return next(c for c in found.checks if c.name.startswith(start))


def outcomes(found) -> dict[str, str]:
    return {c.name: c.outcome for c in found.checks}


def test_textbook_numbers_hold_every_check(cfg, case_values):
    found = dead_relu.findings(textbook(case_values), cfg)
    assert set(outcomes(found).values()) == {HOLDS}, [(c.name, c.outcome, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED
    # three per cause, the baseline, two per adaptive optimizer, the dead-from-start limit, two per leaky cure
    assert len(found.checks) == 3 * 3 + 1 + 2 * 2 + 1 + 2 * 3
    assert set(check(found, "high_lr (optimizer.lr=2.0) kills units").values) == {f"seed {s}" for s in SEEDS}


def test_units_that_come_back_are_not_dead_for_good(cfg, case_values):
    found = dead_relu.findings(textbook(case_values, high_lr=([0.08, 0.7, 0.06], CHANCE)), cfg)
    assert check(found, "... for good: high_lr").outcome == FAILS
    assert check(found, "high_lr (").outcome == FAILS  # at the end it is no higher than the baseline's
    assert check(found, "... for good: large_init").outcome == HOLDS
    assert verdict(found.checks).verdict == PARTLY


def test_a_cause_that_does_not_hurt_learning_fails_its_learning_check(cfg, case_values):
    found = dead_relu.findings(textbook(case_values, large_init=([0.08, 0.3, 0.4], 0.76)), cfg)
    assert check(found, "... and large_init's net learns clearly worse").outcome == FAILS
    assert check(found, "large_init (").outcome == HOLDS  # its units still died


def test_an_adaptive_optimizer_that_does_not_keep_units_alive_fails(cfg, case_values):
    found = dead_relu.findings(textbook(case_values, large_init__adam=([0.08, 0.3, 0.38], 0.45)), cfg)
    assert check(found, "adam keeps the large init's units alive").outcome == FAILS
    assert check(found, "... and adam on the large init learns").outcome == FAILS
    assert check(found, "adagrad keeps the large init's units alive").outcome == HOLDS


def test_an_optimizer_that_revives_units_dead_from_the_start_contradicts_the_limit(cfg, case_values):
    found = dead_relu.findings(textbook(case_values, neg_bias__adam=([0.42, 0.2, 0.05], 0.7)), cfg)
    assert check(found, "adam does not help units dead from the start").outcome == FAILS


def test_leaky_nets_that_learn_no_better_than_relu_fail(cfg, case_values):
    runs = textbook(
        case_values, neg_bias__leaky=([0.42, 0.35, 0.3], 0.50), high_lr__leaky=([0.08, 0.8, 0.8], CHANCE + 0.02)
    )
    found = dead_relu.findings(runs, cfg)
    for cause in ("neg_bias", "high_lr"):
        assert check(found, f"leaky_relu keeps learning under {cause}").outcome == FAILS
        assert check(found, f"... and leaky_relu under {cause} learns").outcome == FAILS
    assert check(found, "leaky_relu keeps learning under large_init").outcome == HOLDS
    assert verdict(found.checks).verdict == PARTLY


def test_seeds_that_disagree_leave_the_check_undecided(cfg, case_values):
    runs = replaced(textbook(case_values), fake("neg_bias", 1, [0.42, 0.1, 0.05], 0.7, case_values["neg_bias"]))
    rise = check(dead_relu.findings(runs, cfg), "neg_bias (")
    assert rise.outcome == UNDECIDED and rise.why == "seeds disagree: holds on 2 of 3"


def test_a_missing_run_leaves_its_checks_undecided(cfg, case_values):
    runs = replaced(
        textbook(case_values),
        fake("neg_bias", 1, [0.42], 0.0, case_values["neg_bias"], status="FAILED"),
        fake("large_init+leaky", 2, [0.08], 0.0, case_values["large_init+leaky"], status="KILLED"),
    )
    found = dead_relu.findings(runs, cfg)
    for name in (
        "neg_bias (",
        "... for good: neg_bias",
        "... and neg_bias's net",
        "leaky_relu keeps learning under neg_bias",
        "adam does not help units dead from the start",
    ):
        assert check(found, name).outcome == UNDECIDED and check(found, name).why == "runs missing: seed 1", name
    assert check(found, "... and leaky_relu under large_init learns").why == "runs missing: seed 2"
    assert check(found, "high_lr (").outcome == HOLDS


def test_the_smoke_size_decides_what_its_cases_allow_and_names_the_rest(cfg, case_values):
    runs = [r for r in textbook(case_values) if r.case in ("baseline", "high_lr", "high_lr+leaky") and r.seed == "0"]
    found = dead_relu.findings(runs, cfg)
    assert check(found, "high_lr (").outcome == HOLDS and "one seed" in check(found, "high_lr (").why
    assert check(found, "large_init (").why == "this size runs no large_init case"
    assert check(found, "adam keeps").why == "this size runs no large_init+adam, large_init case"
    assert verdict(found.checks).verdict == PARTLY


def test_a_diverged_run_counts_at_chance_with_its_last_dead_share(cfg, case_values):
    runs = replaced(
        textbook(case_values),
        *[fake("high_lr", s, [0.08, 0.7], 0.0, case_values["high_lr"], diverged=True) for s in SEEDS],
    )
    found = dead_relu.findings(runs, cfg)
    assert check(found, "... and high_lr's net learns clearly worse").outcome == HOLDS
    assert check(found, "high_lr (").outcome == HOLDS
    assert found.metrics["test_acc/high_lr"] == pytest.approx(CHANCE)


def test_causes_that_kill_nothing_hold_no_cause_check(cfg, case_values):
    healthy = TEXTBOOK["baseline"]  # every cause as healthy as the baseline
    found = dead_relu.findings(textbook(case_values, **{c: healthy for c in dead_relu.CAUSES}), cfg)
    cause_checks = found.checks[:9]
    assert all(c.outcome in (FAILS, UNDECIDED) for c in cause_checks)
    assert [c.outcome for c in cause_checks[::3]] == [FAILS] * 3  # no dead share rises over the baseline's
    assert verdict(found.checks).verdict == PARTLY


def test_no_check_holding_is_not_supported(cfg, case_values):
    # nothing learns, nothing dies: the causes do nothing, no cure has anything to cure, nothing learns
    numbers = {c.replace("+", "__"): ([0.08, 0.05, 0.03], CHANCE) for c in TEXTBOOK}
    numbers["neg_bias__adam"] = ([0.42, 0.2, 0.0], CHANCE)  # ... and adam revives what died from the start
    found = dead_relu.findings(textbook(case_values, **numbers), cfg)
    assert HOLDS not in outcomes(found).values(), [(c.name, c.outcome) for c in found.checks]
    assert verdict(found.checks).verdict == NOT_SUPPORTED


def test_the_table_folds_seeds_per_case_and_runs_csv_keeps_every_run(cfg, case_values):
    runs = textbook(case_values)
    found = dead_relu.findings(runs, cfg)
    assert [r["case"] for r in found.rows] == list(TEXTBOOK)
    assert all(r["seeds"] == len(SEEDS) for r in found.rows)
    assert found.rows[1]["change"] == "optimizer.lr=2.0"
    high_lr = [r for r in runs if r.case == "high_lr"]
    means = [sum(r.metrics[f"dead_relu/layer_0{i}"] for r in high_lr) / len(high_lr) for i in (1, 2)]
    assert found.rows[1][dead_relu.LAYERS] == "/".join(f"{v:.2f}" for v in means)
    assert len(found.series["runs.csv"]) == len(runs)
    assert found.metrics["dead_final/high_lr"] == pytest.approx(0.71)
    assert set(found.figures) == {"dead_relu.png"}


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("dead_relu", tmp_path, "study.n_jobs=1")  # in-process: no worker start-up
    folder = tmp_path / "reports" / "dead_relu"
    assert result["runs"] == 3 and result["failed"] == 0  # baseline, high_lr, high_lr+leaky
    for name in ("summary.md", "summary.json", "metrics.json", "runs.csv", "dead_relu.png"):
        assert (folder / name).is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == result["verdict"] and summary["finished"] == 3
    by_name = {c["name"]: c for c in summary["checks"]}
    assert len(by_name) == 21
    # the smoke size runs no large_init or neg_bias case: those checks are named, and undecided
    assert {c["outcome"] for n, c in by_name.items() if "large_init" in n or "neg_bias" in n} == {UNDECIDED}
    high_lr = next(c for n, c in by_name.items() if n.startswith("high_lr ("))
    assert set(high_lr["values"]) == {"seed 0"}
