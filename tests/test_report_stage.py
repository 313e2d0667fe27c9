"""python -m pipeline.report: one page over every study's report, images inlined in the HTML."""

import json

from matplotlib.figure import Figure

from pipeline import report
from pipeline.studies.base import StudyReport, StudyRun
from pipeline.study import write_report
from tests.helpers import config


def fake_study(root, name, supported, conclusion):
    fig = Figure()
    fig.add_subplot().plot([1, 2], [3, 4])
    rep = StudyReport(["run", "value"], [{"run": "a", "value": 1.5}], conclusion, supported, {"x/a": 1.5},
                      {f"{name}.png": fig})
    write_report(name, f"claim of {name}", "smoke", rep, [StudyRun("a", {}, "FINISHED")], 1.0, root / name)


def test_index_gathers_every_summary_and_inlines_images(tmp_path):
    fake_study(tmp_path, "depth", True, "sigmoid factor 0.24")
    fake_study(tmp_path, "activations", False, "relu no better")
    result = report.run(config(f"reports_dir={tmp_path}", name="report"))
    assert [e["study"] for e in result["studies"]] == ["activations", "depth"]  # the order of STUDIES
    index = (tmp_path / "index.md").read_text()
    assert "| [activations](#study-activations) | not supported | 1 | relu no better |" in index
    assert "| [depth](#study-depth) | supported | 1 | sigmoid factor 0.24 |" in index
    assert "![depth](depth/depth.png)" in index and "claim of depth" in index
    html = (tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html
    assert json.loads((tmp_path / "depth" / "metrics.json").read_text())["supported"] == 1


def test_no_reports_yet(tmp_path):
    result = report.run(config(f"reports_dir={tmp_path / 'empty'}", name="report"))
    assert result["studies"] == [] and "no study reports yet" in report.report_line(result)
