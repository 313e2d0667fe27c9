"""python -m pipeline.ablate: the regularization study driven by the ablate config group."""

import json

import pytest

from pipeline import ablate
from pipeline.harness.validate import ConfigError
from tests.helpers import config, tmp_store


def test_cases_cover_baselines_penalties_and_decay():
    cases = ablate.cases(config(name="ablate").ablate)
    assert {"optimizer": "sgd", "regularizer": "none"} in cases
    assert {"optimizer": "adamw", "grid": {"optimizer.weight_decay": "0.001,0.003,0.01,0.03,0.1,0.3"}} in cases
    assert len(cases) == 2 * (1 + 3 + 1)


def test_bad_ablate_values_are_named():
    with pytest.raises(ConfigError, match="ablate.penalties: got 'l3'"):
        ablate.cases(config("ablate.penalties=[l3]", name="ablate").ablate)
    with pytest.raises(ConfigError, match="ablate.strengths"):
        ablate.cases(config("ablate.strengths=[-1]", name="ablate").ablate)


@pytest.mark.slow
def test_a_small_ablation_runs_and_reports(tmp_path):
    cfg = config(
        "study.size=smoke",
        f"tracking.uri={tmp_store(tmp_path)}",
        f"+study.reports_dir={tmp_path}",
        "ablate.optimizers=[sgd,adam]",
        "ablate.penalties=[l2]",
        "ablate.strengths=[0.01]",
        name="ablate",
        hydra=True,
    )
    result = ablate.run(cfg)
    assert result["study"] == "regularization" and result["runs"] == 6 and result["failed"] == 0
    metrics = json.loads((tmp_path / "regularization" / "metrics.json").read_text())
    assert metrics["finished"] == 6
    summary = (tmp_path / "regularization" / "summary.md").read_text()
    assert "adamw" in summary and "l2" in summary
