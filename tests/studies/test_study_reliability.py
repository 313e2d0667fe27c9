"""Many jobs on one fresh SQLite store lose nothing; results do not depend on n_jobs or job order."""

import pytest
from mlflow import MlflowClient
from omegaconf import open_dict

from pipeline import study, tracking
from pipeline.harness.recording import HISTORY_FILE, decode_history
from tests.helpers import config, tmp_store


def smoke_cfg(tmp_path, cases, n_jobs, every=1):
    cfg = config(
        "study=dead_relu",
        "study.size=smoke",
        f"study.n_jobs={n_jobs}",
        f"probes.every={every}",
        f"tracking.uri={tmp_store(tmp_path)}",
        f"+study.reports_dir={tmp_path / 'reports'}",
        hydra=True,
    )
    with open_dict(cfg):
        cfg.study.sizes.smoke.cases = cases
    return cfg


def histories(tmp_path, result) -> dict[str, dict]:
    """run name -> its history.json (times excluded: they measure the machine, not the run)."""
    store = tmp_store(tmp_path)
    out = {}
    for child in tracking.child_runs(store, result["parent_run_id"]):
        history = decode_history(tracking.download_json(store, child.info.run_id, HISTORY_FILE))
        out[child.info.run_name] = {k: v for k, v in history.items() if not k.startswith("time/")}
    return out


@pytest.mark.slow
def test_eight_jobs_on_a_fresh_store_lose_no_metric(tmp_path):
    cases = [{"name": f"seed{i}", "seed": i} for i in range(8)]
    result = study.run(smoke_cfg(tmp_path, cases, n_jobs=8))  # the store does not exist before this
    assert result["failed"] == 0 and result["runs"] == 8
    client = MlflowClient(tmp_store(tmp_path))
    kids = tracking.child_runs(tmp_store(tmp_path), result["parent_run_id"])
    assert len(kids) == 8 and all(k.info.status == "FINISHED" for k in kids)
    logged = histories(tmp_path, result)
    for kid in kids:  # every step each job logged reached the database
        for key in ("train/loss", "grad_norm/total", "dead_relu/layer_01"):
            stored = client.get_metric_history(kid.info.run_id, key)
            assert len(stored) == len(logged[kid.info.run_name][key]) > 0, (kid.info.run_name, key)


@pytest.mark.slow  # benchmarks/stability.py also compares whole studies across n_jobs
def test_same_metrics_whatever_n_jobs_and_order(tmp_path):
    cases = [
        {"name": "a", "seed": 0},
        {"name": "b", "seed": 1},
        {"name": "c", "model.activation": "tanh"},
        {"name": "d", "optimizer.lr": 2.0},
    ]
    one = study.run(smoke_cfg(tmp_path / "one", cases, n_jobs=1, every=3))
    two = study.run(smoke_cfg(tmp_path / "two", list(reversed(cases)), n_jobs=2, every=3))
    h1, h2 = histories(tmp_path / "one", one), histories(tmp_path / "two", two)
    assert sorted(h1) == sorted(h2) == list("abcd")  # the run names: the case names
    for name in h1:
        assert h1[name] == h2[name], name  # bit-identical values at the same steps
