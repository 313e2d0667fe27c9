"""A study's findings written out: reports/<study>/summary.md, summary.json, metrics.json, runs.csv, figures."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import markdown

from pipeline.studies.base import Findings, StudyRun, markdown_table
from pipeline.studies.checks import checks_table, verdict

SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "summary.html"  # the report with its figures inlined: what MLflow's artifact viewer renders whole
IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
DESCRIPTION_LIMIT = 8000  # MLflow's longest tag value: the parent run's description is a tag
_MORE_ROWS = "| … (the rest in report/summary.md) | | | |"


def headline_text(verdict_text: str) -> str:
    """ "SUPPORTED", "PARTLY SUPPORTED (2 of 3)", ...: the line a terminal shows first."""
    return verdict_text.upper().replace(" OF ", " of ")


def failed_runs(runs: list[StudyRun]) -> list[StudyRun]:
    """The jobs whose latest attempt did not finish (FAILED, KILLED, missing)."""
    return [r for r in runs if not r.ok]


def summary_markdown(
    name: str, claim: str, size: str, found: Findings, runs: list[StudyRun], seconds: float, figures: list[Path]
) -> str:
    """summary.md: the claim, the verdict, the checks table, then the runs, notes and figures."""
    v = verdict(found.checks)
    failed = failed_runs(runs)
    seeds = sorted({r.seed for r in runs})
    lines = [
        f"# Study `{name}` ({size})",
        "",
        f"**Claim.** {claim}",
        "",
        f"**Verdict: {v}** ({v.holds} of {v.total} checks hold, {v.fails} fail, {v.undecided} undecided; "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}: {', '.join(seeds)}).",
        "",
        checks_table(found.checks),
        markdown_table(found.columns, found.rows),
    ]
    if failed:
        lines += ["**Runs that did not finish:**", ""]
        lines += [f"- `{r.label}`: {r.status}{': ' + r.error if r.error else ''}" for r in failed] + [""]
    lines += found.notes + ([""] if found.notes else [])
    lines += [f"![{f.stem}]({f.name})" for f in figures] + [""]
    lines += [f"{len(runs)} runs, {len(runs) - len(failed)} finished; wall time {seconds:.1f} s.", ""]
    return "\n".join(lines)


def html_page(md_text: str, root: Path, title: str) -> str:
    """Standalone HTML of a Markdown report: tables rendered, every PNG it links (relative to root) inlined.

    Opens offline from anywhere, and MLflow's artifact viewer renders it whole (it shows Markdown's image links
    as text, an HTML file with its images as data URIs in full).
    """

    def inline(m: re.Match) -> str:
        path = root / m.group(2)
        if not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{m.group(1)}](data:image/png;base64,{data})"

    body = markdown.markdown(IMAGE_LINK.sub(inline, md_text), extensions=["tables", "toc"])
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 7px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>"
    )


def artifact_url(path: str, run_id: str) -> str:
    """An artifact of a run as MLflow's UI fetches it (`get-artifact`, relative: it resolves against the UI's own
    address and prefix, so it works wherever the UI is served)."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def mlflow_markdown(md_text: str, run_id: str, folder: str = "report") -> str:
    """summary.md as logged to the parent run: each figure a link that opens it.

    MLflow's artifact viewer renders Markdown but shows an image with a relative path (`![depth](depth.png)`) as
    that text and drops a data URI; a link to the run's own artifact opens. The report with its figures drawn is
    summary.html beside it, and the run's description.
    """

    def link(m: re.Match) -> str:
        url = artifact_url(f"{folder}/{m.group(2)}", run_id)
        return f"Figure [{m.group(2)}]({url}) (opens the image; drawn in {SUMMARY_HTML} beside this file)"

    return IMAGE_LINK.sub(link, md_text)


def run_description(
    name: str, claim: str, size: str, found: Findings, runs: list[StudyRun], run_id: str, figures: list[str]
) -> str:
    """The description of a study's parent run (`mlflow.note.content`: MLflow's UI renders it as Markdown on the
    run's Overview): the verdict, the claim, the checks table, the figures (`figures`: the run's artifact paths of
    its PNGs, drawn through the UI's own artifact URL) and the runs table. Within MLflow's tag limit: the runs
    table goes first, then the figures, then check rows."""
    v = verdict(found.checks)
    head = [
        f"**Verdict: {v}** ({v.holds} of {v.total} checks hold, {v.fails} fail, {v.undecided} undecided; "
        f"{sum(r.ok for r in runs)} of {len(runs)} runs finished).",
        "",
        f"**Claim.** {claim}",
        "",
    ]
    checks = checks_table(found.checks).rstrip("\n").split("\n")
    images = ["", *(f"![{Path(f).stem}]({artifact_url(f, run_id)})" for f in figures)] if figures else []
    table = ["", markdown_table(found.columns, found.rows).rstrip("\n")] if found.rows else []
    tail = [
        "",
        f"Study `{name}` ({size}): its runs are this run's children. The whole report: Artifacts, "
        f"`report/{SUMMARY_HTML}` (figures drawn) and `report/summary.md`.",
    ]
    while True:
        text = "\n".join(head + checks + images + table + tail)
        if len(text) <= DESCRIPTION_LIMIT:
            return text
        if table:
            table = []
        elif images:
            images = images[:-1] if len(images) > 2 else []
        elif len(checks) > 3:  # header, rule and one row at least; the rows cut say so
            if checks[-1] == _MORE_ROWS:
                del checks[-2]
            else:
                checks[-1] = _MORE_ROWS
        else:
            return text[:DESCRIPTION_LIMIT]


def summary_json(name: str, claim: str, size: str, found: Findings, runs: list[StudyRun]) -> dict[str, Any]:
    """summary.json: the verdict and every check, for tools (DVC, the report page, scripts)."""
    v = verdict(found.checks)
    return {
        "study": name,
        "size": size,
        "claim": claim,
        "verdict": v.verdict,
        "verdict_text": str(v),
        "holds": v.holds,
        "fails": v.fails,
        "undecided": v.undecided,
        "checks": [c.as_json() for c in found.checks],
        "runs": len(runs),
        "finished": sum(r.ok for r in runs),
        "seeds": sorted({r.seed for r in runs}),
    }


def flat_metrics(found: Findings, runs: list[StudyRun]) -> dict[str, float]:
    """metrics.json: the study's finite numbers plus the check counts (for `dvc metrics diff`)."""
    v = verdict(found.checks)
    metrics = {k: float(x) for k, x in found.metrics.items() if isinstance(x, (int, float)) and math.isfinite(x)}
    metrics.update(
        {
            "runs": len(runs),
            "finished": sum(r.ok for r in runs),
            "checks/holds": v.holds,
            "checks/fails": v.fails,
            "checks/undecided": v.undecided,
            "checks/total": v.total,
        }
    )
    return metrics


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write(
    name: str, claim: str, size: str, found: Findings, runs: list[StudyRun], seconds: float, folder: Path
) -> list[Path]:
    """Write the study's report folder (old figures and tables removed first); the files written."""
    from pipeline.harness import plots

    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.png"), *folder.glob("*.csv")]:
        old.unlink()
    figures = [plots.save(fig, folder / fname) for fname, fig in found.figures.items()]
    tables = [write_csv(folder / fname, rows) for fname, rows in found.series.items()]
    summary = folder / "summary.md"
    md_text = summary_markdown(name, claim, size, found, runs, seconds, figures)
    summary.write_text(md_text)
    (folder / SUMMARY_HTML).write_text(html_page(md_text, folder, f"study {name} ({size})"))
    (folder / SUMMARY_JSON).write_text(json.dumps(summary_json(name, claim, size, found, runs), indent=2))
    (folder / "metrics.json").write_text(json.dumps(flat_metrics(found, runs), indent=2, sort_keys=True))
    return [summary, folder / SUMMARY_HTML, folder / SUMMARY_JSON, folder / "metrics.json", *figures, *tables]
