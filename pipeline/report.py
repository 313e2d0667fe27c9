"""python -m pipeline.report: every study's claim and what this machine measured, on one page.

reports/index.md gathers the studies' summary.md files; reports/index.html is the same page with the
PNGs embedded, so it opens offline from anywhere.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from omegaconf import DictConfig

from pipeline.harness.cli import stage_main
from pipeline.harness.paths import ROOT
from pipeline.studies import STUDIES
from pipeline.studies.checks import cell
from pipeline.studies.render import IMAGE_LINK, SUMMARY_JSON, html_page


def _relink(folder: str, match: re.Match) -> str:
    """An image link of a study's summary, made relative to the reports folder."""
    return f"![{match.group(1)}]({folder}/{match.group(2)})"


def study_folders(root: Path) -> list[Path]:
    """Folders holding a study's summary, in the order of STUDIES, then any others by name."""
    found = {p.parent.name: p.parent for p in root.glob("*/summary.md")}
    return [found[n] for n in STUDIES if n in found] + [found[n] for n in sorted(found) if n not in STUDIES]


def entry(folder: Path) -> dict:
    """One study's line on the index, from its summary.json (written beside summary.md for tools like this)."""
    try:
        summary = json.loads((folder / SUMMARY_JSON).read_text())
    except (OSError, ValueError):  # a report from before summary.json, or a damaged one: say so, do not guess
        return {
            "study": folder.name,
            "verdict": "undecided",
            "verdict_text": "undecided (no summary.json)",
            "runs": None,
            "checks": [],
        }
    return {
        "study": folder.name,
        "verdict": summary["verdict"],
        "verdict_text": summary["verdict_text"],
        "runs": summary.get("runs"),
        "checks": summary.get("checks", []),
    }


def check_counts(checks: list[dict]) -> str:
    """ "9 hold", or "8 hold, 1 undecided: <the checks that did not hold>"."""
    counts = {o: sum(c["outcome"] == o for c in checks) for o in ("holds", "fails", "undecided")}
    text = ", ".join(f"{n} {'hold' if o == 'holds' else o}" for o, n in counts.items() if n)
    others = [f"{c['name']} ({c['outcome']})" for c in checks if c["outcome"] != "holds"]
    return text + (": " + "; ".join(others) if others else "")


def gather(root: Path) -> tuple[str, list[dict]]:
    """The index in Markdown (image links relative to root) and one entry per study."""
    entries, sections = [], []
    for folder in study_folders(root):
        entries.append(entry(folder))
        text = (folder / "summary.md").read_text()
        body = IMAGE_LINK.sub(functools.partial(_relink, folder.name), text)
        sections.append(body.replace("# Study", "## Study", 1))
    lines = ["# gradlab: the seeds' claims, measured", "", "| study | verdict | runs | checks |", "|---|---|---|---|"]
    for e in entries:
        checks = cell(check_counts(e["checks"]))
        lines.append(
            f"| [{e['study']}](#study-{e['study'].replace('_', '-')}) | {e['verdict_text']} | "
            f"{e['runs'] if e['runs'] is not None else '-'} | {checks} |"
        )
    return "\n".join(lines + [""] + sections), entries


def to_html(md_text: str, root: Path) -> str:
    """Standalone HTML: tables rendered, every PNG inlined as a data URI."""
    return html_page(md_text, root, "gradlab report")


def run(cfg: DictConfig) -> dict:
    """Write reports/index.md and reports/index.html from the studies' reports."""
    root = Path(cfg.get("reports_dir") or ROOT / "reports")
    md_text, entries = gather(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.md").write_text(md_text)
    (root / "index.html").write_text(to_html(md_text, root))
    return {"studies": entries, "index": str(root / "index.md"), "html": str(root / "index.html")}


def summary_line(result: dict) -> str:
    if not result["studies"]:
        return f"no study reports yet (run python -m pipeline.study study=NAME); wrote {result['index']}"
    lines = [f"{e['study']:<15} {e['verdict_text']}" for e in result["studies"]]
    return "\n".join(lines + [f"report: {result['html']}"])


main = stage_main(run, summary_line, config_name="report")

if __name__ == "__main__":
    main()
