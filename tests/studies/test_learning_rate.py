"""Study `learning_rate`: its checks on hand-built runs (per seed), and the smoke study end to end (slow)."""

from __future__ import annotations

import json

import pytest

from pipeline.analysis.diagnosis import diagnose
from pipeline.studies import learning_rate
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, NOT_SUPPORTED, PARTLY, SUPPORTED, UNDECIDED, verdict
from pipeline.studies.measures import thresholds
from tests.helpers import config, run_study

SEEDS = (0, 1, 2)
CHANCE = 0.1  # digits: ten balanced classes


@pytest.fixture(scope="module")
def cfg():
    return config("study=learning_rate", hydra=True)


@pytest.fixture(scope="module")
def lim(cfg):
    return thresholds(cfg, *learning_rate.LIMITS)


def fake(
    lr: float,
    seed: int,
    drop: float,
    val: float,
    test: float | None = None,
    dead: float = 0.0,
    diverged_at: int | None = None,
    status: str = "FINISHED",
) -> StudyRun:
    """A run at `lr` whose training loss lost `drop` of its initial value, with val/test accuracy and a final dead
    share; labelled as analysis.diagnosis labels real runs. A diverged run keeps the val acc of its last epoch."""
    start = 2.3 + 0.3 * seed  # one initial loss per seed: the same init whatever the lr
    end = start * (1 - drop)
    metrics = {
        "train/initial_loss": start,
        "data/chance_acc": CHANCE,
        "val/acc": val,
        "val/loss": end + 0.1,
        "dead_relu/total": dead,
    }
    steps = [20 * i for i in range(1, 6)]
    losses = [start * (1 - drop * i / 5) for i in range(1, 6)]
    if diverged_at is None:
        metrics.update({"train/final_loss": end, "test/acc": val if test is None else test})
    else:
        metrics["diverged_at_step"] = float(diverged_at)
        steps, losses = steps[:1], [start * 3]
    history = {"train/loss": list(zip(steps, losses)), "dead_relu/total": [(0, 0.0)] + [(s, dead) for s in steps]}
    verdict_labels = diagnose(metrics, None, diverged_at is not None)
    values = {"optimizer.lr": f"{lr:g}", "seed": str(seed)}
    return StudyRun(
        f"optimizer.lr={lr:g} seed={seed}", values, status, f"id-{lr}-{seed}", verdict_labels, metrics, history
    )


def textbook(lim: dict[str, float], seeds=SEEDS) -> list[StudyRun]:
    """1e-4 crawls, 1e-2 half-way, 0.1 converges and validates best, 1 converges (best on test, not on val),
    3 kills ReLUs without diverging, 10 diverges; a little seed-to-seed spread."""
    runs = []
    for s in seeds:
        j = 0.01 * s
        runs += [
            fake(1e-4, s, lim["crawl_drop"] / 5 + j, 0.12 + j),
            fake(1e-2, s, 0.75 + j, 0.80 + j),
            fake(0.1, s, 1 - (1 - lim["converged_drop"]) / 5 - j / 10, 0.95 + j / 2, test=0.94),
            fake(1.0, s, 1 - (1 - lim["converged_drop"]) / 10, 0.93 + j / 2, test=0.97, dead=0.02 + j),
            fake(3.0, s, 0.15 + j, 0.1, dead=0.02 + j + 2.5 * lim["dead_jump"]),
            fake(10.0, s, 0.0, 0.95, diverged_at=7 + s),
        ]
    return runs


def replaced(runs: list[StudyRun], *new: StudyRun) -> list[StudyRun]:
    """`runs` with the runs of the same lr and seed as `new` swapped for them."""
    key = {(learning_rate.lr_of(r), r.seed) for r in new}
    return [r for r in runs if (learning_rate.lr_of(r), r.seed) not in key] + list(new)


def check(found, start: str):
    """The check whose name starts with `start`."""
    return next(c for c in found.checks if c.name.startswith(start))


def findings(runs, cfg):
    return learning_rate.findings(runs, cfg)


CRAWL, INSIDE, CONVERGES, LEARNS = "too small an lr crawls", "a good lr lies", "a good lr converges", "... and learns"
LARGEST, MECHANISM = "too large an lr fails", "every lr above the best"


def test_textbook_numbers_hold_every_check(cfg, lim):
    found = findings(textbook(lim), cfg)
    assert [c.outcome for c in found.checks] == [HOLDS] * 6, [(c.name, c.outcome, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED
    for name in (CRAWL, CONVERGES):  # per seed: every seed's number is in the check
        assert set(check(found, name).values) == {f"seed {s}" for s in SEEDS}


def test_the_best_lr_is_chosen_on_validation_never_on_test(cfg, lim):
    runs = textbook(lim)  # lr 1 has the best test acc (0.97), lr 0.1 the best val acc
    found = findings(runs, cfg)
    assert {found.metrics[f"best_lr/seed_{s}"] for s in SEEDS} == {0.1}
    # val acc tied: the lower val loss decides (lr 1's loss is lower), still no test number involved
    tied = [fake(1.0, s, 1 - (1 - lim["converged_drop"]) / 10, 0.95 + 0.005 * s, test=0.5) for s in SEEDS]
    assert {findings(replaced(runs, *tied), cfg).metrics[f"best_lr/seed_{s}"] for s in SEEDS} == {1.0}


def test_a_diverged_run_is_never_the_best_although_it_kept_a_high_val_acc(cfg, lim):
    runs = replaced(textbook(lim), *[fake(3.0, s, 0.0, 0.99, diverged_at=40) for s in SEEDS])
    found = findings(runs, cfg)
    assert {found.metrics[f"best_lr/seed_{s}"] for s in SEEDS} == {0.1}
    assert check(found, MECHANISM).outcome == HOLDS  # lr 3 now fails by diverging


def test_a_smallest_lr_that_already_converges_fails_the_crawl_check(cfg, lim):
    runs = replaced(textbook(lim), *[fake(1e-4, s, 0.6 + 0.01 * s, 0.5) for s in SEEDS])
    found = findings(runs, cfg)
    assert check(found, CRAWL).outcome == FAILS
    assert verdict(found.checks).verdict == PARTLY


def test_a_grid_that_stops_before_too_large_fails_the_extremes_and_too_large_checks(cfg, lim):
    runs = [r for r in textbook(lim) if learning_rate.lr_of(r) <= 1.0]
    runs = replaced(runs, *[fake(1.0, s, 0.999, 0.97) for s in SEEDS])  # the largest lr now validates best
    found = findings(runs, cfg)
    assert check(found, INSIDE).outcome == FAILS
    assert check(found, LARGEST).outcome == FAILS  # it learns: nothing too large was tried
    assert check(found, CRAWL).outcome == HOLDS and verdict(found.checks).verdict == PARTLY


def test_a_best_lr_that_does_not_converge_fails(cfg, lim):
    # every lr above 1e-2 diverges: the best one left only got half-way and (val 0.3) hardly learned
    runs = [r for r in textbook(lim) if learning_rate.lr_of(r) < 0.1]
    runs += [fake(lr, s, 0.0, 0.9, diverged_at=5) for lr in (0.1, 1.0) for s in SEEDS]
    runs = replaced(runs, *[fake(1e-2, s, 0.3 + 0.02 * s, 0.3) for s in SEEDS])
    found = findings(runs, cfg)
    assert check(found, CONVERGES).outcome == FAILS
    assert check(found, LEARNS).outcome == FAILS
    assert check(found, INSIDE).outcome == HOLDS and check(found, LARGEST).outcome == HOLDS


def test_a_too_large_lr_failing_otherwise_contradicts_the_mechanism(cfg, lim):
    # lr 3 no longer learns but neither diverges nor kills ReLUs (its dead share stays at the best's)
    runs = replaced(textbook(lim), *[fake(3.0, s, 0.1, 0.1, dead=0.01) for s in SEEDS])
    found = findings(runs, cfg)
    assert check(found, MECHANISM).outcome == FAILS
    assert check(found, LARGEST).outcome == HOLDS  # lr 10 still diverges


def test_seeds_that_disagree_leave_the_check_undecided(cfg, lim):
    runs = replaced(textbook(lim), fake(3.0, 2, 0.1, 0.1, dead=0.01))
    found = findings(runs, cfg)
    mechanism = check(found, MECHANISM)
    assert mechanism.outcome == UNDECIDED and mechanism.why == "not on seed 2"
    assert verdict(found.checks).verdict == PARTLY


def test_an_effect_within_the_seed_spread_is_undecided(cfg, lim):
    # the smallest lr drops below the crawl limit on every seed, but one seed only just
    crawl = lim["crawl_drop"]
    runs = replaced(
        textbook(lim),
        fake(1e-4, 0, crawl - 0.01, 0.12),
        fake(1e-4, 1, crawl - 0.02, 0.12),
        fake(1e-4, 2, crawl - 0.24, 0.12),
    )
    assert "spread" in check(findings(runs, cfg), CRAWL).why
    assert check(findings(runs, cfg), CRAWL).outcome == UNDECIDED


def test_a_missing_run_leaves_its_checks_undecided(cfg, lim):
    runs = replaced(textbook(lim), fake(1e-4, 1, 0.0, 0.1, status="FAILED"), fake(10.0, 2, 0.0, 0.1, status="KILLED"))
    found = findings(runs, cfg)
    assert check(found, CRAWL).outcome == UNDECIDED and check(found, CRAWL).why == "runs missing: seed 1"
    assert check(found, LARGEST).outcome == UNDECIDED and "seed 2" in check(found, LARGEST).why
    assert check(found, MECHANISM).outcome == UNDECIDED
    assert check(found, CONVERGES).outcome == HOLDS


def test_a_diverged_smallest_lr_is_not_a_crawl(cfg, lim):
    runs = replaced(textbook(lim), fake(1e-4, 0, 0.0, 0.1, diverged_at=3))
    crawl = check(findings(runs, cfg), CRAWL)
    assert crawl.outcome == UNDECIDED and crawl.why == "diverged (not a crawl): seed 0"


def test_too_few_learning_rates_decide_nothing(cfg, lim):
    runs = [r for r in textbook(lim) if learning_rate.lr_of(r) in (1e-4, 0.1)]
    found = findings(runs, cfg)
    assert verdict(found.checks).verdict == UNDECIDED
    assert verdict(findings([], cfg).checks).verdict == UNDECIDED


def test_nothing_but_failures_is_not_supported(cfg, lim):
    # every lr crawls: nothing converges, the largest does not fail either
    runs = [fake(lr, s, 0.5 + 0.01 * s, 0.2) for lr in (1e-4, 1e-2, 1.0) for s in SEEDS]
    runs = replaced(runs, *[fake(1e-4, s, 0.5 + 0.01 * s, 0.3) for s in SEEDS])  # validates best, hardly learns
    found = findings(runs, cfg)
    assert verdict(found.checks).verdict == NOT_SUPPORTED
    assert check(found, CRAWL).outcome == FAILS and check(found, INSIDE).outcome == FAILS


def test_the_table_folds_seeds_and_runs_csv_keeps_every_run(cfg, lim):
    runs = textbook(lim)
    found = findings(runs, cfg)
    assert [row["lr"] for row in found.rows] == sorted({learning_rate.lr_of(r) for r in runs})
    assert all(row["seeds"] == len(SEEDS) for row in found.rows)
    per_run = found.series["runs.csv"]
    assert len(per_run) == len(runs)
    regimes = {(row["lr"], row["seed"]): row["regime"] for row in per_run}
    assert {regimes[(lr, "1")] for lr in (1e-4, 0.1, 3.0, 10.0)} == {"crawl", "converged", "dead", "diverged"}
    assert sum(row["best on val"] for row in per_run) == len(SEEDS)
    assert set(found.figures) == {"learning_rate.png"}
    assert found.metrics["diverged_share/lr_10"] == 1.0


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("learning_rate", tmp_path, "study.n_jobs=1")
    folder = tmp_path / "reports" / "learning_rate"
    assert result["runs"] == 3 and result["failed"] == 0
    for name in ("summary.md", "summary.json", "metrics.json", "runs.csv", "learning_rate.png"):
        assert (folder / name).is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == result["verdict"] and summary["runs"] == 3 and summary["seeds"] == ["0"]
    names = [c["name"] for c in summary["checks"]]
    assert len(names) == 6 and names[0].startswith(CRAWL) and names[-1].startswith(MECHANISM)
    assert all(c["outcome"] in (HOLDS, FAILS, UNDECIDED) for c in summary["checks"])
    assert set(summary["checks"][0]["values"]) == {"seed 0"}
