"""A study's findings written out: reports/<study>/summary.md, summary.json, metrics.json, runs.csv, figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from pipeline.studies.base import Findings, StudyRun, markdown_table
from pipeline.studies.checks import checks_table, verdict

SUMMARY_JSON = "summary.json"


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
    summary.write_text(summary_markdown(name, claim, size, found, runs, seconds, figures))
    (folder / SUMMARY_JSON).write_text(json.dumps(summary_json(name, claim, size, found, runs), indent=2))
    (folder / "metrics.json").write_text(json.dumps(flat_metrics(found, runs), indent=2, sort_keys=True))
    return [summary, folder / SUMMARY_JSON, folder / "metrics.json", *figures, *tables]
