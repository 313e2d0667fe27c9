"""A study in MLflow's UI (pipeline/studies/browse.py, grid's run names, render's description): an experiment per
study, short distinct run names, tags to filter on, the answer on the parent run, a report that renders."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import open_dict

from pipeline.harness.recording import PROFILES
from pipeline.studies import STUDIES, browse, grid, render
from pipeline.studies.base import Findings, StudyRun
from pipeline.studies.checks import compare, every
from tests.helpers import config, run_study, tmp_store

# --- run names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "short"),
    [
        ("model.depth", "20", "d20"),
        ("seed", "1", "s1"),
        ("model.activation", "tanh", "tanh"),
        ("optimizer.lr", "0.3", "lr0.3"),
        ("train.batch_size", "null", "Bfull"),
        ("model.batch_norm", "true", "bn"),
        ("model.batch_norm", "false", ""),  # a switch off says nothing
        ("init", "he_normal", "he_normal"),  # a group's choice: its name
        ("regularizer", "none", "no-regularizer"),
        ("optimizer.beta1", "0.9", "beta1=0.9"),  # any other key: its last part spelled out
    ],
)
def test_a_swept_value_in_a_run_name(key, value, short):
    assert grid.short_value(key, value) == short


def test_run_names_are_the_case_and_the_swept_values():
    jobs = {j.label: j.name for j in grid.expand(config("study=depth", "study.size=default", hydra=True))}
    assert jobs["sigmoid model.depth=20 seed=0"] == "sigmoid d20 s0"
    assert jobs["relu he model.depth=20 seed=2"] == "relu he d20 s2"
    assert len(set(jobs.values())) == len(jobs) == 60


def test_names_that_clash_or_run_long_get_the_config_hash():
    cfg = config("study=depth", "study.size=smoke", hydra=True)
    with open_dict(cfg):  # two cases of one name, and one whose name is longer than the UI shows
        cfg.study.cases = [
            {"name": "same", "model.activation": "tanh"},
            {"name": "same", "model.activation": "relu"},
            {"name": "a case whose name goes on and on beyond forty", "model.activation": "elu"},
        ]
    jobs = grid.expand(cfg)
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names) == 6 and all(len(n) <= grid.MAX_NAME for n in names)
    clashing = [j for j in jobs if j.case == "same"]
    assert all(j.name == f"same d{j.cfg.model.depth} #{j.hash[:6]}" for j in clashing)
    long = [j for j in jobs if j.case.startswith("a case")]
    assert all(j.name.startswith("a case whose name goes on") and j.name.endswith(j.hash[:6]) for j in long)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        pytest.param(n, s, marks=[] if (n, s) == ("normalization", "default") else pytest.mark.slow)
        for n in STUDIES
        for s in grid.SIZES
    ],
)
def test_every_study_names_its_runs_apart_within_40_characters(name, size):
    jobs = grid.expand(config(f"study={name}", f"study.size={size}", hydra=True))
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names) and max(map(len, names)) <= grid.MAX_NAME, names
    assert not any("#" in n for n in names), names  # the curated studies need no hash to tell runs apart


# --- the study's experiment and its saved view -------------------------------------------------------------------


def _view_state(tags: dict[str, str]) -> dict:
    view = json.loads(tags[f"mlflow.sharedViewState.{browse.SAVED_VIEW}"])
    assert view["name"] == "study" and view["state"].startswith("deflate;")
    return json.loads(zlib.decompress(base64.b64decode(view["state"].removeprefix("deflate;"))))


def test_the_saved_view_shows_verdict_and_swept_values_and_charts_profiles_on_a_log_scale():
    jobs = grid.expand(config("study=depth", "study.size=smoke", hydra=True))
    state = _view_state(browse.saved_view(jobs))
    assert state["selectedColumns"] == [
        "tags.`verdict`",
        "tags.`study_case`",
        "params.`model.activation`",
        "params.`model.depth`",
        "params.`init.name`",  # a group's choice is its name param
        "metrics.`test/acc`",
    ]
    charts = state["compareRunCharts"]
    assert [c["metricKey"] for c in charts] == list(PROFILES)
    assert all(c["scaleType"] == "log" and c["xAxisKey"] == "step" for c in charts)
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in state["compareRunSections"]}
    assert state["runsHiddenMode"] == "SHOW_ALL"


def test_metric_keys_mlflow_accepts():
    assert browse.mlflow_key("dead_peak/high_lr+leaky") == "dead_peak/high_lr_and_leaky"
    assert browse.mlflow_key("acc (sgd, λ=0.1)") == "acc _sgd_ λ_0.1_"
    assert browse.mlflow_key("per_layer_factor/relu_he") == "per_layer_factor/relu_he"


# --- the parent run's description and the report in MLflow -------------------------------------------------------


def _findings(n_checks: int = 2, rows: int = 3) -> tuple[Findings, list[StudyRun]]:
    runs = [StudyRun(f"r{i}", {"seed": str(i)}, "FINISHED", f"id{i}") for i in range(2)]
    checks = [compare(f"check number {i}", {"seed 0": 0.1, "seed 1": 0.2}, "<", 1.0) for i in range(n_checks - 1)]
    checks.append(every("a run that does not learn", {"seed 0": False, "seed 1": False}))
    rows_ = [{"case": f"case {i}", "verdict": "vanishing"} for i in range(rows)]
    return Findings(checks=checks, columns=["case", "verdict"], rows=rows_), runs


def test_the_description_gives_verdict_claim_checks_figure_and_runs():
    found, runs = _findings()
    text = render.run_description("depth", "the claim", "smoke", found, runs, "RID", ["report/depth.png"])
    head, _, rest = text.partition("\n\n")
    assert head.startswith("**Verdict: partly supported (1 of 2)**") and "2 of 2 runs finished" in head
    assert "**Claim.** the claim" in rest
    assert "| check number 0 | 0.15 (0.1..0.2, 2 seeds) | < 1 | **holds** |" in text
    assert "| a run that does not learn |" in text
    assert "![depth](get-artifact?path=report%2Fdepth.png&run_uuid=RID)" in text
    assert "| case 2 | vanishing |" in text
    assert text.index("| check |") < text.index("![depth]") < text.index("| case |")


def test_a_long_description_drops_the_runs_then_figures_then_check_rows():
    found, runs = _findings(n_checks=5, rows=400)
    figures = [f"report/fig{i}.png" for i in range(3)]
    text = render.run_description("s", "c", "smoke", found, runs, "RID", figures)
    assert len(text) <= render.DESCRIPTION_LIMIT and "| case 0 |" not in text and "![fig2]" in text

    found, runs = _findings(n_checks=200, rows=0)
    text = render.run_description("s", "c", "smoke", found, runs, "RID", figures)
    assert len(text) <= render.DESCRIPTION_LIMIT and "![fig" not in text
    assert "| check number 0 |" in text and "the rest in report/summary.md" in text
    assert text.startswith("**Verdict:")  # the verdict is never cut


def test_summary_md_in_mlflow_links_its_figures_instead_of_embedding_them():
    md = "# Study\n\n![depth](depth.png)\n\n![grad ratio](grad_ratio.png)\n\nthe end"
    out = render.mlflow_markdown(md, "RID")
    assert "![" not in out and out.endswith("the end")
    assert "Figure [depth.png](get-artifact?path=report%2Fdepth.png&run_uuid=RID)" in out
    assert "[grad_ratio.png](get-artifact?path=report%2Fgrad_ratio.png&run_uuid=RID)" in out


def test_summary_html_inlines_its_figures(tmp_path):
    (tmp_path / "depth.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = render.html_page("# Study\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![depth](depth.png)", tmp_path, "t")
    assert "<table>" in page and 'src="data:image/png;base64,' in page and "depth.png" not in page


# --- end to end: a study's runs and answer in a store ---------------------------------------------------------------


def test_a_study_in_mlflow(tmp_path):
    """dead_relu at smoke size (3 runs): where its runs go, how they are named and tagged, what the parent holds."""
    result = run_study("dead_relu", tmp_path, "study.n_jobs=1")
    client = MlflowClient(tmp_store(tmp_path))
    experiment = client.get_experiment_by_name("gradlab/dead_relu")  # the study's own experiment
    assert experiment is not None and experiment.tags["study"] == "dead_relu"
    assert experiment.tags["mlflow.note.content"].startswith("**Study `dead_relu`.** A large learning rate")
    assert _view_state(experiment.tags)["selectedColumns"][:2] == ["tags.`verdict`", "tags.`study_case`"]

    parent = client.get_run(result["parent_run_id"])
    assert parent.info.experiment_id == experiment.experiment_id and parent.info.run_name == "study dead_relu (smoke)"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_name = {c.info.run_name: c for c in children}
    assert sorted(by_name) == ["baseline", "high_lr", "high_lr+leaky"]  # the case names: nothing to add
    data_set = config("study=dead_relu", hydra=True).data.name
    for name, child in by_name.items():
        tags = child.data.tags
        assert tags["study_case"] == name and tags["label"] == name and tags["study"] == "dead_relu" and tags["verdict"]
        (data,) = child.inputs.dataset_inputs  # the Dataset column: the data set, the digest of its content
        assert data.dataset.name == data_set and len(data.dataset.digest) == 10
    filtered = client.search_runs([experiment.experiment_id], "tags.verdict LIKE '%dead%'")  # README's search
    assert {c.info.run_name for c in filtered} == {n for n, c in by_name.items() if "dead" in c.data.tags["verdict"]}

    # the answer on the parent: verdict and checks as tags, metrics.json as metrics, the description, the report
    tags = parent.data.tags
    assert tags["verdict"] == tags["study_verdict"] == result["verdict_text"]
    checks = {k: v for k, v in tags.items() if k.startswith("check.")}
    assert checks == {f"check.{i:02d}": f"{c['outcome']}: {c['name']}" for i, c in enumerate(result["checks"], 1)}
    folder = tmp_path / "reports" / "dead_relu"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert parent.data.metrics == {browse.mlflow_key(k): pytest.approx(v) for k, v in metrics.items()}
    note = tags["mlflow.note.content"]
    assert note.startswith(f"**Verdict: {result['verdict_text']}**") and result["checks"][0]["name"] in note
    assert f"![dead_relu](get-artifact?path=report%2Fdead_relu.png&run_uuid={parent.info.run_id})" in note
    artifacts = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert artifacts == {p.name for p in folder.iterdir()}
    logged_md = Path(client.download_artifacts(parent.info.run_id, "report/summary.md", str(tmp_path))).read_text()
    assert logged_md == render.mlflow_markdown((folder / "summary.md").read_text(), parent.info.run_id)
    html = Path(client.download_artifacts(parent.info.run_id, "report/summary.html", str(tmp_path))).read_text()
    assert "data:image/png;base64," in html and result["verdict_text"] in html
    images = [a.path for a in client.list_artifacts(parent.info.run_id, "images")]
    assert any(Path(p).name.startswith("report~dead_relu+step+0") and p.endswith(".png") for p in images)
