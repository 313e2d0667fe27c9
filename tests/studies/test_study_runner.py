"""The study runner: grid x cases expansion, parallel children, resume, failures, report files."""

import json

import pytest
from mlflow import MlflowClient
from omegaconf import open_dict

from pipeline import study
from pipeline.harness.validate import ConfigError
from pipeline.studies import STUDIES, grid
from tests.helpers import config, tmp_store


def study_cfg(tmp_path, name="activations", *overrides):
    return config(
        f"study={name}",
        "study.size=smoke",
        f"tracking.uri={tmp_store(tmp_path)}",
        f"+study.reports_dir={tmp_path / 'reports'}",
        *overrides,
        hydra=True,
    )


def test_grid_times_cases_and_user_overrides():
    cfg = config("study=depth", "study.size=smoke", "model.width=12", hydra=True)
    with open_dict(cfg):
        cfg.study.cases = [{"name": "plain"}, {"name": "bn", "model.batch_norm": True}]
        cfg.study.grid = {"model.activation": "sigmoid,tanh,relu"}
    jobs = grid.expand(cfg)
    assert len(jobs) == 2 * 3 * 2  # cases x activations x smoke depths
    assert {j.cfg.model.width for j in jobs} == {12}  # the user's override reaches every job
    assert {j.cfg.model.depth for j in jobs} == {2, 6} and {j.cfg.train.epochs for j in jobs} == {1}
    bn = [j for j in jobs if j.cfg.model.batch_norm]
    assert len(bn) == 6 and all(j.label.startswith("bn ") for j in bn)
    assert len({j.hash for j in jobs}) == len(jobs)


def test_every_job_is_validated_before_anything_runs(tmp_path):
    cfg = study_cfg(tmp_path, "activations", "optimizer.lr=-1")
    with pytest.raises(ConfigError, match="optimizer.lr"):
        study.run(cfg)
    assert not (tmp_path / "mlruns").exists()
    with pytest.raises(ConfigError, match="study.size: got 'huge'"):
        study.run(config("study=depth", "study.size=huge", hydra=True))


def test_runs_resumes_and_reports(tmp_path):
    cfg = study_cfg(tmp_path, "activations")
    with open_dict(cfg):  # two activations, and a third job that cannot allocate its weights
        cfg.study.grid = {"model.activation": "relu,tanh"}
        cfg.study.cases = [{"name": "ok"}, {"name": "huge", "model.width": 10**12, "model.activation": "relu"}]
    first = study.run(cfg)
    assert first["runs"] == 4 and first["ran"] == 4 and first["failed"] == 2
    folder = tmp_path / "reports" / "activations"
    summary = (folder / "summary.md").read_text()
    assert "**Claim.**" in summary and "Runs that did not finish" in summary and "MemoryError" in summary
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"] == 4 and metrics["finished"] == 2 and metrics["checks/total"] >= 1
    summary_json = json.loads((folder / "summary.json").read_text())
    sigmoid = [c for c in summary_json["checks"] if c["name"].startswith("sigmoid")]
    assert sigmoid and all(c["outcome"] == "undecided" for c in sigmoid)  # no sigmoid run: cannot be decided
    assert (folder / "activations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    second = study.run(cfg)  # the finished ones are skipped, the failed ones tried again (and fail again)
    assert second["skipped"] == 2 and second["ran"] == 2 and second["failed"] == 2  # counted, not "0 failed"
    client = MlflowClient(tmp_store(tmp_path))
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.stage = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # reopened, not duplicated
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/summary.md", "report/metrics.json", "report/activations.png"} <= artifacts
    children = client.search_runs(
        [parents[0].info.experiment_id], "tags.study = 'activations' and tags.stage = 'train'"
    )
    assert len(children) == 6  # 4 runs, then the 2 failed ones again: every child is found by its study tag
    superseded = [c for c in children if c.data.tags.get("superseded") == "true"]
    assert len(superseded) == 2 and all(c.info.status == "FAILED" for c in superseded)  # the first attempts
    assert {c.data.tags["superseded_by"] for c in superseded} <= {c.info.run_id for c in children}


def test_every_listed_study_has_a_config_and_a_report():
    from pipeline.harness.paths import CONF_DIR

    for name in STUDIES:
        assert (CONF_DIR / "study" / f"{name}.yaml").is_file(), name
        cfg = config(f"study={name}", "study.size=smoke", hydra=True)
        assert cfg.study.name == name and cfg.study.claim
        assert grid.expand(cfg), name


def test_rerunning_a_finished_study_creates_no_runs(tmp_path):
    cfg = study_cfg(tmp_path, "dead_relu")
    first = study.run(cfg)
    client = MlflowClient(tmp_store(tmp_path))
    count = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    second = study.run(cfg)
    assert first["failed"] == 0 and second["ran"] == 0 and second["skipped"] == first["runs"]
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == count


def test_a_case_grid_of_one_value_is_kept():
    cfg = config("study=depth", "study.size=smoke", hydra=True)
    with open_dict(cfg):
        cfg.study.cases = [
            {"name": "one", "grid": {"optimizer.lr": 0.3}},
            {"name": "two", "grid": {"optimizer.lr": "0.1,1"}},
        ]
        cfg.study.grid = {}
    jobs = [j for j in grid.expand(cfg) if j.cfg.model.depth == 2]  # the smoke size's depths: 2 and 6
    assert sorted(j.cfg.optimizer.lr for j in jobs) == [0.1, 0.3, 1.0]
    assert [j.values for j in jobs if j.case == "one"] == [{"optimizer.lr": "0.3", "model.depth": "2"}]


def test_a_child_finished_by_older_code_is_run_again_not_counted(tmp_path, monkeypatch):
    """Same config, changed code (engine, probes, diagnosis...): the job runs again and the old child is
    superseded, so no stale result or label counts (n_jobs=1: the jobs run in this process)."""
    cfg = study_cfg(tmp_path, "dead_relu", "study.n_jobs=1")
    first = study.run(cfg)
    assert first["ran"] == first["runs"]
    monkeypatch.setattr(study, "code_version", lambda: "changed-code")
    monkeypatch.setattr("pipeline.harness.recording.code_version", lambda: "changed-code")
    second = study.run(cfg)
    assert second["ran"] == second["runs"] and second["skipped"] == 0
    client = MlflowClient(tmp_store(tmp_path))
    children = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.stage = 'train'")
    old = [c for c in children if c.data.tags["code_version"] != "changed-code"]
    assert len(old) == first["runs"] and all(c.data.tags.get("superseded") == "true" for c in old)
    assert study.run(cfg)["ran"] == 0  # today's code finished them all: resumed, nothing to run
