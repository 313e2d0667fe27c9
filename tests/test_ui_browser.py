"""The MLflow UI in a real browser: `make ui` on a store holding a small study, driven by headless Chromium.

A user opens the experiment, expands the study's parent run to see its children, opens one and finds its
per-layer gradient-norm charts (section grad_norm); the parent run's artifacts hold the study's report.
A screenshot of the child's charts is saved to tests/artifacts/mlflow_ui_run.png.

Needs Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it) and the `playwright`
package (the dev extra) driving it: no browser download.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.harness.paths import ROOT
from tests.helpers import free_port, run_study, serving, tmp_store

pytestmark = pytest.mark.slow  # a server, a browser and a study: `make test-slow` and CI run it

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing (pip install -e '.[dev]')"
)

STUDY = "dead_relu"
CHILD_CASE = "baseline"
SCREENSHOT = ROOT / "tests" / "artifacts" / "mlflow_ui_run.png"
TIMEOUT_MS = 30_000
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
    """The smoke-size study in a fresh store: its result, the store folder and the child runs by name."""
    tmp = tmp_path_factory.mktemp("ui")
    result = run_study(STUDY, tmp, "study.n_jobs=1")
    children = {r.info.run_name: r for r in tracking.child_runs(tmp_store(tmp), result["parent_run_id"])}
    assert result["failed"] == 0, {name: (r.info.status, r.data.tags.get("error")) for name, r in children.items()}
    return {"result": result, "store": tmp / "mlruns", "children": children}


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
    with serving(
        cmd, f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=gradlab", log, cwd=ROOT, env=env
    ):
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
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()


def _close_assistant(page) -> None:
    """Close MLflow's assistant side panel (it narrows the page); nothing to do when it is not open."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() == 1:
        close.click()


def test_study_runs_listed_and_child_grad_norm_charts(study, ui, page):
    expect = sync_api.expect
    parent_name = f"study {STUDY} (smoke)"
    child_name = f"{STUDY} {CHILD_CASE}"
    assert study["result"]["runs"] == len(study["children"]) >= 2
    assert child_name in study["children"]
    grad_keys = sorted(k for k in study["children"][child_name].data.metrics if k.startswith("grad_norm/"))
    assert "grad_norm/total" in grad_keys and any(k.startswith("grad_norm/layer_") for k in grad_keys)

    # home page -> "Model training" -> the experiment: the study's parent run, its children folded under it
    page.goto(ui + "/")
    page.get_by_text("Model training", exact=True).click()
    page.get_by_role("link", name="gradlab", exact=True).first.click()
    parent_link = page.get_by_role("link", name=parent_name, exact=True)
    expect(parent_link).to_be_visible(timeout=TIMEOUT_MS)
    parent_row = page.locator(".ag-row").filter(has=parent_link)
    parent_row.get_by_role("button").first.click()  # the row's expander (+)
    for name in study["children"]:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible(timeout=TIMEOUT_MS)

    # one child: its page, the "Model metrics" tab, the charts filtered to grad_norm: one chart per key
    page.get_by_role("link", name=child_name, exact=True).click()
    expect(page.get_by_role("heading", name=child_name)).to_be_visible(timeout=TIMEOUT_MS)
    assert page.url.endswith(f"/runs/{study['children'][child_name].info.run_id}")
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("grad_norm")
    for key in grad_keys:
        # each chart's legend names the run and the full key; its title is the part after the prefix
        expect(page.get_by_text(f"{child_name} ({key})", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text(key.split("/", 1)[1], exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("grad_norm", exact=True)).to_be_visible()  # the section: keys grouped by prefix
    # one plotly chart per key, each with a drawn line through the logged steps ("M x,y L x,y ...")
    charts = page.locator(".js-plotly-plot")
    expect(charts).to_have_count(len(grad_keys), timeout=TIMEOUT_MS)
    for i in range(len(grad_keys)):
        line = charts.nth(i).locator("path.js-line").first
        assert "L" in (line.get_attribute("d") or ""), f"chart {i} has no line"

    _close_assistant(page)
    page.wait_for_timeout(500)  # let the charts re-lay out to the wider page
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_parent_run_holds_the_study_report(study, ui, page):
    expect = sync_api.expect
    parent_id = study["result"]["parent_run_id"]
    page.goto(
        f"{ui}/#/experiments/{study['children'][f'{STUDY} {CHILD_CASE}'].info.experiment_id}/runs/{parent_id}/artifacts"
    )
    expect(page.get_by_role("heading", name=f"study {STUDY} (smoke)")).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_text("report", exact=True).click()
    for name in ("metrics.json", f"{STUDY}.png"):
        expect(page.get_by_text(name, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_text("summary.md", exact=True).click()
    # the markdown is fetched from the server's artifact store and rendered
    expect(page.get_by_role("heading", name=f"Study {STUDY} (smoke)", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Claim.", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
