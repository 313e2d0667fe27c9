"""python -m pipeline.report: one page over every study's report, read from summary.json, images inlined."""

from matplotlib.figure import Figure

from pipeline import report
from pipeline.studies import render
from pipeline.studies.base import Findings, StudyRun
from pipeline.studies.checks import FAILS, HOLDS, Check
from tests.helpers import config


def fake_study(root, name, outcomes):
    fig = Figure()
    fig.add_subplot().plot([1, 2], [3, 4])
    checks = [Check(f"{name} check {i}", o, "1.5", "> 1") for i, o in enumerate(outcomes)]
    found = Findings(checks, ["run", "value"], [{"run": "a", "value": 1.5}], {"x/a": 1.5}, {f"{name}.png": fig})
    render.write(name, f"claim of {name}", "smoke", found, [StudyRun("a", {}, "FINISHED")], 1.0, root / name)


def test_index_gathers_every_summary_and_inlines_images(tmp_path):
    fake_study(tmp_path, "depth", [HOLDS, HOLDS])
    fake_study(tmp_path, "activations", [HOLDS, FAILS])
    result = report.run(config(f"reports_dir={tmp_path}", name="report"))
    assert [e["study"] for e in result["studies"]] == ["activations", "depth"]  # the order of STUDIES
    index = (tmp_path / "index.md").read_text()
    assert (
        "| [activations](#study-activations) | partly supported (1 of 2) | 1 | 1 hold, 1 fails: "
        "activations check 1 (fails) |"
    ) in index
    assert "| [depth](#study-depth) | supported | 1 |" in index
    assert "![depth](depth/depth.png)" in index and "claim of depth" in index
    html = (tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html
    assert "activations     partly supported (1 of 2)" in report.summary_line(result)


def test_a_pipe_in_a_check_name_does_not_break_the_tables(tmp_path):
    fake_study(tmp_path, "activations", [FAILS])  # a check that did not hold is named on the index
    found = (tmp_path / "activations" / "summary.json").read_text().replace("activations check 0", "|mean| < 0.25")
    (tmp_path / "activations" / "summary.json").write_text(found)
    report.run(config(f"reports_dir={tmp_path}", name="report"))
    row = next(line for line in (tmp_path / "index.md").read_text().splitlines() if "[activations]" in line)
    assert "\\|mean\\|" in row and row.replace("\\|", "").count("|") == 5  # four cells: its own pipes escaped


def test_a_report_without_summary_json_is_undecided_not_guessed(tmp_path):
    fake_study(tmp_path, "depth", [HOLDS])
    (tmp_path / "depth" / "summary.json").unlink()  # a report written before summary.json existed
    result = report.run(config(f"reports_dir={tmp_path}", name="report"))
    assert result["studies"][0]["verdict"] == "undecided"
    assert "undecided (no summary.json)" in (tmp_path / "index.md").read_text()


def test_no_reports_yet(tmp_path):
    result = report.run(config(f"reports_dir={tmp_path / 'empty'}", name="report"))
    assert result["studies"] == [] and "no study reports yet" in report.summary_line(result)
