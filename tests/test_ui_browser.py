"""The MLflow UI in a real browser: `make ui` on a store holding the depth study at smoke size, driven by headless
Chromium, as README's "Browsing results in the MLflow UI" walks a user through it.

Each test answers one of the questions a user brings (issue 13): which experiment holds the study; which run is
which and what became of it, without opening runs; the gradient norm across layers, run against run, on a log scale;
the study's verdict on its parent run; its report and figure, rendered. One screenshot per view is kept under
tests/artifacts/ (mlflow_ui_*.png) to look at.

Needs Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it) and the `playwright`
package (the dev extra) driving it: no browser download.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, urljoin

import pytest
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.harness.paths import ROOT
from pipeline.harness.recording import PROFILES
from pipeline.studies import browse
from tests.helpers import free_port, run_study, serving, tmp_store

pytestmark = pytest.mark.slow  # a server, a browser and a study: `make test-slow` and CI run it

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing (pip install -e '.[dev]')"
)

STUDY = "depth"
PARENT = f"study {STUDY} (smoke)"
VANISHING = "sigmoid d6"  # smoke size: depths 2 and 6; sigmoid's first-layer gradient vanishes at depth 6
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT_MS = 30_000
# what a plotly chart draws: its y axis's scale, and per trace (named by its run) how many points
_DRAWN = "e => ({scale: e.layout.yaxis.type, lines: Object.fromEntries(e.data.map(t => [t.name, (t.x || []).length]))})"
# without the background-networking flags Chromium's own connections are refused on a closed network
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The smoke-size study in a fresh store: its result, the store, its experiment and runs."""
    tmp = tmp_path_factory.mktemp("ui")
    result = run_study(STUDY, tmp)
    children = {r.info.run_name: r for r in tracking.child_runs(tmp_store(tmp), result["parent_run_id"])}
    assert result["failed"] == 0, {name: (r.info.status, r.data.tags.get("error")) for name, r in children.items()}
    parent = MlflowClient(tmp_store(tmp)).get_run(result["parent_run_id"])
    return {
        "result": result,
        "store": tmp / "mlruns",
        "children": children,
        "parent": parent,
        "experiment_id": parent.info.experiment_id,
    }


@pytest.fixture(scope="module")
def ui(study, tmp_path_factory):
    """`make ui` on the study's store at a free port (this interpreter's venv); the base URL, then stopped."""
    port = free_port()
    venv = Path(sys.executable).parent.parent
    log = tmp_path_factory.mktemp("ui_log") / "mlflow_ui.log"
    # an outer `make test` passes its jobserver and flags down; this make is not part of it
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # -o: never reinstall the project from inside a test
    cmd = [
        "make",
        "-s",
        "-o",
        f"{venv}/.installed",
        "ui",
        f"VENV={venv}",
        f"UI_STORE={study['store']}",
        f"UI_PORT={port}",
    ]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/ajax-api/2.0/mlflow/experiments/search?max_results=1", log, cwd=ROOT, env=env):
        yield base


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """Headless Debian Chromium with a fresh profile, driven by playwright."""
    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, ui):
    """A tab in MLflow's "Model training" mode (the UI opens in its GenAI mode, where experiments show traces)."""
    page = browser_context.new_page()
    page.goto(ui + "/")
    page.get_by_text("Model training", exact=True).click()
    _close_assistant(page)
    yield page
    page.close()


def _close_assistant(page) -> None:
    """Close MLflow's assistant side panel (it narrows the page); nothing to do when it is not open."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() == 1:
        close.click()


def _screenshot(page, name: str, full_page: bool = False) -> Path:
    """Keep a screenshot of the view as tests/artifacts/mlflow_ui_<name>.png (look at them: README)."""
    _close_assistant(page)
    page.wait_for_timeout(500)  # let charts re-lay out to the page's width
    path = ARTIFACTS / f"mlflow_ui_{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000
    return path


def _columns_of(page, run_name: str):
    """The runs table's row of a run, its scrolling columns (params, metrics, tags): the grid keeps the pinned
    name column in another row element with the same row-id."""
    name_cell = page.locator(".ag-row").filter(has=page.get_by_role("link", name=run_name, exact=True)).first
    return page.locator(f".ag-center-cols-container .ag-row[row-id='{name_cell.get_attribute('row-id')}']")


def _open_study_view(page, study) -> None:
    """The study's experiment from the experiment list, its saved view "study", the parent unfolded."""
    expect = sync_api.expect
    page.get_by_role("link", name="Experiments").first.click()
    page.get_by_role("link", name=f"gradlab/{STUDY}", exact=True).click()
    page.get_by_test_id("saved-views-trigger").click()
    page.get_by_text("study", exact=True).last.click()
    expect(page).to_have_url(re.compile(f"viewStateShareKey={browse.SAVED_VIEW}"))
    parent_link = page.get_by_role("link", name=PARENT, exact=True)
    expect(parent_link).to_be_visible(timeout=TIMEOUT_MS)
    page.locator(".ag-row").filter(has=parent_link).get_by_role("button").first.click()  # the row's expander (+)
    for name in study["children"]:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible(timeout=TIMEOUT_MS)


def test_each_study_is_an_experiment_listed_with_its_claim(study, page):
    expect = sync_api.expect
    page.get_by_role("link", name="Experiments").first.click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"gradlab/{STUDY}", exact=True))
    expect(row).to_contain_text("Backprop multiplies one activation derivative per layer", timeout=TIMEOUT_MS)
    _screenshot(page, "experiments")


def test_runs_told_apart_by_name_with_their_verdict_in_a_column(study, page):
    """The saved view's runs table: short distinct names, the verdict and the swept values as columns; a search
    on the verdict tag (README's example) finds the runs whose gradient vanished."""
    expect = sync_api.expect
    names = list(study["children"])
    assert len(set(names)) == len(names) == 8 and all(len(n) <= 40 for n in names)
    assert VANISHING in names and "relu he d6" in names
    _open_study_view(page, study)
    for header in ("verdict", "study_case", "model.depth", "model.activation", "init.name", "test/acc"):
        expect(page.get_by_role("columnheader", name=header, exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
    for name, run in study["children"].items():  # each row shows the run's own verdict, no click needed
        expect(_columns_of(page, name)).to_contain_text(run.data.tags["verdict"], timeout=TIMEOUT_MS)
    expect(_columns_of(page, PARENT)).to_contain_text(study["result"]["verdict_text"], timeout=TIMEOUT_MS)
    _screenshot(page, "runs")

    vanished = sorted(n for n, r in study["children"].items() if "vanishing" in r.data.tags["verdict"])
    assert vanished == [VANISHING]
    search = page.get_by_placeholder('metrics.rmse < 1 and params.model = "tree"')
    search.fill("tags.verdict LIKE '%vanishing%'")
    search.press("Enter")
    expect(page.get_by_role("link", name=VANISHING, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("link", name="sigmoid d2", exact=True)).to_have_count(0, timeout=TIMEOUT_MS)
    _screenshot(page, "search")


def test_gradient_norm_by_layer_one_chart_overlaying_runs_on_a_log_scale(study, page):
    """The saved view's chart mode: each layer profile (profile/grad_norm: step = layer index) is one chart with one
    line per run, y on a log scale."""
    expect = sync_api.expect
    _open_study_view(page, study)
    page.locator("input[name=runs-view-mode][value=CHART]").locator("xpath=../..").click()  # the chart view
    history = MlflowClient(tmp_store(study["store"].parent)).get_metric_history
    for metric in PROFILES:
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(has=page.get_by_text(metric, exact=True))
        plot = card.locator(".js-plotly-plot")
        expect(plot).to_be_visible(timeout=TIMEOUT_MS)
        page.wait_for_function("e => e.data && e.data.length > 0", arg=plot.element_handle())
        drawn = plot.evaluate(_DRAWN)
        assert drawn["scale"] == "log", metric
        # one line per child (the parent has no profile), each over the run's layers: step = layer index
        expected = {name: len(history(r.info.run_id, metric)) for name, r in study["children"].items()}
        assert drawn["lines"] == expected, metric
    _screenshot(page, "profile")


def test_parent_run_description_gives_the_verdict_checks_and_figure(study, page):
    expect = sync_api.expect
    page.goto(f"{page.url.split('#')[0]}#/experiments/{study['experiment_id']}/runs/{study['result']['parent_run_id']}")
    expect(page.get_by_role("heading", name=PARENT)).to_be_visible(timeout=TIMEOUT_MS)
    _close_assistant(page)
    description = page.get_by_text(f"Verdict: {study['result']['verdict_text']}", exact=True)
    expect(description).to_be_visible(timeout=TIMEOUT_MS)
    show_more = page.get_by_text("Show more", exact=True)
    if show_more.count():
        show_more.first.click()
    for check in study["result"]["checks"]:
        expect(page.get_by_text(check["name"], exact=True).first).to_be_attached(timeout=TIMEOUT_MS)
    figure = page.locator(f"img[src*='{quote(f'{browse.REPORT_DIR}/{STUDY}.png', safe='')}']")  # alt is dropped
    figure.scroll_into_view_if_needed()
    expect(figure).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("e => e.complete && e.naturalWidth > 100", arg=figure.element_handle())
    _screenshot(page, "parent", full_page=True)


def test_report_renders_whole_in_the_artifact_viewer(study, page):
    """summary.html with its figure drawn; summary.md with the figure as a link that opens the image."""
    expect = sync_api.expect
    base = page.url.split("#")[0]
    page.goto(f"{base}#/experiments/{study['experiment_id']}/runs/{study['result']['parent_run_id']}/artifacts")
    page.get_by_text("report", exact=True).click()
    for name in ("metrics.json", f"{STUDY}.png", "summary.md", "summary.html"):
        expect(page.get_by_text(name, exact=True)).to_be_visible(timeout=TIMEOUT_MS)

    page.get_by_text("summary.md", exact=True).click()
    expect(page.get_by_role("heading", name=f"Study {STUDY} (smoke)", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    link = page.get_by_role("link", name=f"{STUDY}.png")
    link.scroll_into_view_if_needed()
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    assert f"![{STUDY}]" not in page.locator("body").inner_text()  # no image markup left as text
    response = page.request.get(urljoin(base, link.get_attribute("href") or ""))
    assert response.ok and response.headers["content-type"].startswith("image/png")
    _screenshot(page, "summary_md")

    page.get_by_text("summary.html", exact=True).click()
    frame = page.frame_locator("iframe").first
    expect(frame.get_by_role("heading", name=f"Study {STUDY} (smoke)")).to_be_visible(timeout=TIMEOUT_MS)
    image = frame.get_by_role("img", name=STUDY, exact=True)
    image.scroll_into_view_if_needed()
    assert image.evaluate("e => e.complete && e.naturalWidth") > 100  # drawn, not a broken image
    _screenshot(page, "summary_html")


def test_child_run_grad_norm_charts(study, page):
    """One child's page: the "Model metrics" tab, its grad_norm charts, and the profile across layers."""
    expect = sync_api.expect
    child = study["children"][VANISHING]
    grad_keys = sorted(k for k in child.data.metrics if k.startswith("grad_norm/"))
    assert "grad_norm/total" in grad_keys and any(k.startswith("grad_norm/layer_") for k in grad_keys)
    page.goto(f"{page.url.split('#')[0]}#/experiments/{study['experiment_id']}/runs/{child.info.run_id}")
    expect(page.get_by_role("heading", name=VANISHING)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Model metrics").click()
    search = page.get_by_placeholder("Search metric charts")
    search.fill("grad_norm/")
    for key in grad_keys:
        # each chart's legend names the run and the full key; its title is the part after the prefix
        expect(page.get_by_text(f"{VANISHING} ({key})", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text(key.split("/", 1)[1], exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    _expect_lines(page, len(grad_keys))
    _screenshot(page, "run")

    search.fill("profile/grad_norm")  # the run's gradient norm across its layers: first, mean and last
    profiles = [k for k in PROFILES if k.startswith("profile/grad_norm")]
    for key in profiles:
        expect(page.get_by_text(f"{VANISHING} ({key})", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    _expect_lines(page, len(profiles))
    _screenshot(page, "run_profile")


def _expect_lines(page, n: int) -> None:
    """n plotly charts on the page, each with a drawn line through its points ("M x,y L x,y ...")."""
    charts = page.locator(".js-plotly-plot")
    sync_api.expect(charts).to_have_count(n, timeout=TIMEOUT_MS)
    for i in range(n):
        line = charts.nth(i).locator("path.js-line").first
        assert "L" in (line.get_attribute("d") or ""), f"chart {i} has no line"


RECURRENT = "rnn adding T12"  # a recurrent train run beside the study, in the same store


@pytest.fixture(scope="module")
def recurrent_run(study):
    """One small tanh RNN on the adding problem, trained into the study's store with its per-run figures."""
    from pipeline import train
    from tests.helpers import TINY_RNN, config

    store = tmp_store(study["store"].parent)
    result = train.run(
        config(
            *TINY_RNN,
            f"tracking.uri={store}",
            f"tracking.run_name={RECURRENT}",
        )
    )
    return MlflowClient(store).get_run(result["run_id"])


def test_a_recurrent_run_is_browsable_its_gradient_through_time_charts_and_heat_map(recurrent_run, page):
    """A recurrent run's page: its through-time metrics as charts, and the ||dL/dh_t|| heat map in its artifacts."""
    expect = sync_api.expect
    run = recurrent_run
    keys = sorted(k for k in run.data.metrics if k.startswith(("grad_time", "spectral_radius/")))
    assert {"grad_time_ratio", "grad_time_factor", "grad_time_theory", "spectral_radius/W_hh"} <= set(keys)
    base = page.url.split("#")[0]
    page.goto(f"{base}#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    expect(page.get_by_role("heading", name=RECURRENT)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("grad_time")
    for key in (k for k in keys if k.startswith("grad_time")):
        expect(page.get_by_text(f"{RECURRENT} ({key})", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    _expect_lines(page, 3)
    _screenshot(page, "recurrent_run")

    page.goto(f"{base}#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts")
    expect(page.get_by_text("grad_time.json", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_text("plots", exact=True).click()
    page.get_by_text("grad_time_heatmap.png", exact=True).click()
    image = page.locator("img[alt='plots/grad_time_heatmap.png']").first  # its src is a blob: URL
    expect(image).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("e => e.complete && e.naturalWidth == 800", arg=image.element_handle())  # 8 in x 100 dpi
    _screenshot(page, "recurrent_heatmap")
