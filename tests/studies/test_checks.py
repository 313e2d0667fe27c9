"""The check machinery: outcomes from per-seed numbers, the study verdict, and what a report writes."""

import json
import math

import pytest

from pipeline.studies import render
from pipeline.studies.base import Findings, StudyRun, seed_table
from pipeline.studies.checks import (
    FAILS,
    HOLDS,
    NOT_SUPPORTED,
    PARTLY,
    SUPPORTED,
    UNDECIDED,
    Check,
    compare,
    every,
    verdict,
)


def seeds(*values: float) -> dict[str, float]:
    return {f"seed {i}": v for i, v in enumerate(values)}


def test_a_check_holds_on_every_seed_with_an_effect_beyond_the_spread():
    check = compare("factor small", seeds(0.24, 0.25, 0.23), "<=", 0.5, scale="log")
    assert check.outcome == HOLDS and check.why == ""
    assert check.measured.startswith("0.24 (0.23..0.25, 3 seeds)") and check.expected == "<= 0.5"


def test_a_check_fails_on_every_seed():
    check = compare("acc high", seeds(0.10, 0.11, 0.09), ">", 0.5)
    assert check.outcome == FAILS


def test_seeds_that_disagree_leave_it_undecided():
    check = compare("acc high", seeds(0.9, 0.2, 0.8), ">", 0.5)
    assert check.outcome == UNDECIDED and "2 of 3" in check.why


def test_an_effect_within_the_spread_is_undecided_even_when_every_seed_agrees():
    # margins 0.01, 0.30, 0.02: all hold, mean 0.11 < sd 0.16
    check = compare("acc high", seeds(0.51, 0.80, 0.52), ">", 0.5)
    assert check.outcome == UNDECIDED and "spread" in check.why
    # the same values against a limit they clear by far: decided
    assert compare("acc high", seeds(0.51, 0.80, 0.52), ">", 0.1).outcome == HOLDS


def test_a_missing_run_makes_a_check_undecided_and_names_it():
    check = compare("acc high", {"seed 0": 0.9, "seed 1": math.nan, "seed 2": 0.9}, ">", 0.5)
    assert check.outcome == UNDECIDED and check.why == "runs missing: seed 1"
    assert every("learns", {"seed 0": True, "seed 1": None}).outcome == UNDECIDED


def test_paired_limits_compare_seed_by_seed():
    sigmoid, tanh = seeds(0.25, 0.24, 0.26), seeds(0.95, 0.9, 1.0)
    check = compare("gap", sigmoid, "<", tanh, times=0.5, scale="log", limit_name="tanh's factor")
    assert check.outcome == HOLDS and "0.5 x tanh's factor" in check.expected
    # seed 1's tanh collapsed to sigmoid's level: that seed fails, so the seeds disagree
    assert compare("gap", sigmoid, "<", {**tanh, "seed 1": 0.3}, times=0.5).outcome == UNDECIDED


def test_an_infinite_margin_decides_without_a_spread():
    # a diverged run's loss is inf: below no limit, on every seed
    assert compare("loss low", seeds(math.inf, math.inf, 3.0), "<", 1.0).outcome == FAILS


def test_one_seed_decides_and_says_it_had_no_spread():
    check = compare("acc high", {"seed 0": 0.9}, ">", 0.5)
    assert check.outcome == HOLDS and "one seed" in check.why


def test_every_holds_fails_or_names_the_exceptions():
    assert every("diverges", {"a": True, "b": True}).outcome == HOLDS
    assert every("diverges", {"a": False, "b": False}).outcome == FAILS
    mixed = every("diverges", {"a": True, "b": False})
    assert mixed.outcome == UNDECIDED and mixed.why == "not on b"


@pytest.mark.parametrize(
    "outcomes, expected",
    [
        ([HOLDS, HOLDS], SUPPORTED),
        ([HOLDS, FAILS, UNDECIDED], PARTLY),
        ([FAILS, UNDECIDED], NOT_SUPPORTED),
        ([UNDECIDED, UNDECIDED], UNDECIDED),
        ([], UNDECIDED),
    ],
)
def test_the_verdict_follows_from_the_checks_alone(outcomes, expected):
    v = verdict([Check(f"c{i}", o, "", "") for i, o in enumerate(outcomes)])
    assert v.verdict == expected
    if expected == PARTLY:
        assert str(v) == "partly supported (1 of 3)"


def fabricated_runs() -> list[StudyRun]:
    return [
        StudyRun(f"r{s}", {"seed": str(s), "x": "a"}, "FINISHED", f"id{s}", ["healthy"], {"test/acc": 0.9})
        for s in range(3)
    ] + [StudyRun("r3", {"seed": "0", "x": "b"}, "KILLED", "id3", [], {})]


def test_the_report_shows_the_checks_before_the_runs_and_writes_summary_json(tmp_path):
    checks = [
        compare("holds", seeds(0.9, 0.91, 0.92), ">", 0.5),
        compare("fails", seeds(0.1, 0.11, 0.12), ">", 0.5),
        compare("undecided", {"seed 0": math.nan}, ">", 0.5),
    ]
    found = Findings(checks, ["x", "seed", "acc"], [{"x": "a", "seed": "0", "acc": 0.9}])
    files = render.write("toy", "a claim", "default", found, fabricated_runs(), 1.0, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "**Verdict: partly supported (1 of 3)**" in md
    assert md.index("| check | measured | expected | outcome |") < md.index("| x | seed | acc |")
    assert "- `r3`: KILLED" in md  # the job whose latest attempt did not finish is listed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == PARTLY and summary["holds"] == 1 and summary["fails"] == 1
    assert [c["outcome"] for c in summary["checks"]] == [HOLDS, FAILS, UNDECIDED]
    assert set(summary["checks"][0]) >= {"name", "outcome", "measured", "expected"}
    assert summary["checks"][2]["values"] == {"seed 0": "nan"}  # JSON has no NaN: spelled out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["checks/holds"] == 1 and metrics["checks/total"] == 3 and metrics["finished"] == 3
    assert tmp_path / "summary.json" in files


def test_seed_table_folds_seeds_into_mean_and_range():
    rows = [
        {"case": "a", "seed": str(s), "acc": acc, "verdict": v}
        for s, (acc, v) in enumerate([(0.8, "healthy"), (0.9, "healthy"), (0.1, "not_learning")])
    ]
    columns, folded = seed_table(rows, ["case"], ["case", "seed", "acc", "verdict"])
    assert columns == ["case", "seeds", "acc", "verdict"]
    assert folded == [{"case": "a", "seeds": 3, "acc": "0.6 (0.1..0.9)", "verdict": "healthy x2, not_learning x1"}]
