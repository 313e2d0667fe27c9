"""Proof that verdicts are stable: every study, several times, at n_jobs 1 and 2, every check compared.

    python benchmarks/stability.py [--size default] [--repeats 2] [--jobs 1,2] [--studies depth,init]
                                   [--out benchmarks/stability.json] [--readme README.md] [--merge]

Each (repeat, n_jobs) pass runs `python -m pipeline.study study=NAME` as a user would, on a fresh MLflow
store of its own (a shared store would resume instead of running again). A study is stable when every
pass gives the same outcome for every check (and so the same verdict). The full run (default size, 2
repeats x n_jobs 1 and 2) took 18 min 20 s on 2 cores; it rewrites benchmarks/stability.json and the
study table between the markers in README.md (with --readme). --merge runs only --studies and keeps the
others' results from --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `python benchmarks/stability.py` from anywhere

from benchmarks.studies import study_command  # noqa: E402
from pipeline.studies import STUDIES  # noqa: E402

BEGIN, END = "<!-- stability table: benchmarks/stability.py writes it -->", "<!-- end of stability table -->"


def run_pass(name: str, size: str, n_jobs: int, folder: Path) -> dict:
    """One study run as a fresh command on its own store; its summary.json and wall time."""
    command = study_command(name, size, n_jobs, folder, store=folder / "mlruns" / "mlflow.db")
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:], "seconds": seconds}
    summary = json.loads((folder / "reports" / name / "summary.json").read_text())
    return {
        "seconds": seconds,
        "verdict": summary["verdict"],
        "verdict_text": summary["verdict_text"],
        "checks": {c["name"]: c["outcome"] for c in summary["checks"]},
        "measured": {c["name"]: c["measured"] for c in summary["checks"]},
    }


def compare(passes: list[dict]) -> dict:
    """Whether every pass gave the same outcome per check; the checks that differed."""
    ok = [p for p in passes if "error" not in p]
    names = sorted({n for p in ok for n in p["checks"]})
    differing = [n for n in names if len({p["checks"].get(n) for p in ok}) > 1]
    return {
        "identical": len(ok) == len(passes) and not differing and len({p["verdict"] for p in ok}) == 1,
        "differing_checks": differing,
        "failed_passes": len(passes) - len(ok),
    }


def collect(studies: list[str], size: str, repeats: int, jobs: list[int]) -> dict:
    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "size": size,
        "repeats": repeats,
        "jobs": jobs,
        "studies": {},
    }
    with tempfile.TemporaryDirectory(prefix="gradlab-stability-") as tmp:
        for name in studies:
            passes = []
            for repeat in range(repeats):
                for n in jobs:
                    p = run_pass(name, size, n, Path(tmp) / f"{name}-r{repeat}-j{n}")
                    passes.append({"repeat": repeat, "n_jobs": n, **p})
                    print(
                        f"{name:<15} repeat {repeat} n_jobs {n}: {p.get('verdict_text', p.get('error'))} "
                        f"({p['seconds']:.0f} s)",
                        flush=True,
                    )
            result["studies"][name] = {"passes": passes, "date": result["date"], **compare(passes)}
    return result


def merge(old: dict, new: dict) -> dict:
    """`new`'s studies over `old`'s (same size, repeats and n_jobs), in the order of STUDIES."""
    if (old.get("size"), old.get("repeats"), old.get("jobs")) != (new["size"], new["repeats"], new["jobs"]):
        raise SystemExit("--merge: the earlier results were measured with another size, repeats or n_jobs")
    earlier = {n: {"date": old.get("date", ""), **s} for n, s in old["studies"].items()}  # when each was measured
    studies = {**earlier, **new["studies"]}
    return {**new, "studies": {n: studies[n] for n in STUDIES if n in studies}}


def table(result: dict) -> str:
    """The README's study table: verdict, whether it was identical across the passes, wall times."""
    jobs = result["jobs"]
    dates = sorted({s.get("date", result["date"]) for s in result["studies"].values()})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    lines = [
        f"Measured by `python benchmarks/stability.py` on {when} ({result['size']} size, "
        f"{result['repeats']} repeats x n_jobs {' and '.join(map(str, jobs))}, a fresh store each pass):",
        "",
        f"| study | verdict | identical across the {result['repeats'] * len(jobs)} passes | "
        f"wall time n_jobs={' / '.join(map(str, jobs))} |",
        "|---|---|---|---|",
    ]
    for name, s in result["studies"].items():
        ok = [p for p in s["passes"] if "error" not in p]
        verdicts = sorted({p["verdict_text"] for p in ok}) or ["failed"]
        same = (
            "yes"
            if s["identical"]
            else (
                "no: " + "; ".join(s["differing_checks"])
                if s["differing_checks"]
                else f"no: {s['failed_passes']} pass(es) failed"
            )
        )
        times = " / ".join(
            f"{min(p['seconds'] for p in ok if p['n_jobs'] == n):.0f} s" if any(p["n_jobs"] == n for p in ok) else "-"
            for n in jobs
        )
        lines.append(f"| `{name}` | {' or '.join(verdicts)} | {same} | {times} |")
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    """Replace the table between the markers (they must be there)."""
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{readme}: no stability table markers ({BEGIN} ... {END})")
    head, rest = content.split(BEGIN, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--studies", default=",".join(STUDIES))
    parser.add_argument("--out", type=Path, default=HERE / "stability.json")
    parser.add_argument("--readme", type=Path, default=None, help="rewrite this README's study table")
    parser.add_argument("--merge", action="store_true", help="keep the other studies' results from --out")
    args = parser.parse_args(argv)
    studies = [s for s in args.studies.split(",") if s]
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        print(f"error: --studies: got {unknown}; allowed: {', '.join(STUDIES)}", file=sys.stderr)
        return 2
    result = collect(studies, args.size, args.repeats, [int(j) for j in args.jobs.split(",")])
    if args.merge and args.out.exists():
        result = merge(json.loads(args.out.read_text()), result)
    args.out.write_text(json.dumps(result, indent=2))
    text = table(result)
    if args.readme is not None:
        write_readme(args.readme, text)
    print(text)
    unstable = [n for n, s in result["studies"].items() if not s["identical"]]
    print(
        f"stable: {len(result['studies']) - len(unstable)} of {len(result['studies'])}"
        + (f"; not: {', '.join(unstable)}" if unstable else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
