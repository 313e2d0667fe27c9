"""gradlab's performance figures: every performance target as a ratio measured side by side in one run.

    python benchmarks/run.py [--quick] [--out FILE.json] [--markdown BENCHMARKS.md] [--only recurrent_vs_torch]

--quick runs tiny sizes in seconds (it checks the code, its timings mean nothing). The full run takes
about ten minutes and, by default, rewrites benchmarks/results.json and BENCHMARKS.md. --only KEY measures one
figure and keeps every other one as the JSON file has it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # `python benchmarks/run.py` from anywhere

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from benchmarks import recurrent, steps, studies, tracking_load  # noqa: E402

# key -> (target, "<=" or ">=", what it measures)
TARGETS = {
    "engine_vs_torch": (1.0, "<=", "engine time per SGD step / PyTorch CPU's (same MLP, float32, batch, update)"),
    "recurrent_vs_torch": (
        1.0,
        "<=",
        "engine CPU time per recurrent step (forward, BPTT, SGD update) / PyTorch CPU's nn.RNN (tanh) or nn.LSTM "
        "+ nn.Linear on h_T, both on one thread (same weights, float32, batch; first losses equal); wall_ratio: "
        "wall time, each with its own threads (swings with the machine's load)",
    ),
    "engine_vs_sklearn": (0.5, "<=", "engine time per epoch / MLPClassifier's on digits (128,128), batch 64"),
    "probes_overhead": (0.10, "<=", "time per step with probes=full / probes=off, minus 1"),
    "tracking_overhead": (0.05, "<=", "share of a 16-run smoke study's wall time in MLflow calls (n_jobs=1)"),
    "parallel_speedup": (1.8, ">=", "16-run smoke study wall time at n_jobs=1 / at n_jobs=2"),
    "parallel_speedup_default_study": (
        None,
        "",
        "the same ratio for `python -m pipeline.study study=depth` (default size, 60 runs, a fresh command each)",
    ),
    "study_efficiency": (
        2.0,
        "<=",
        "`depth` (default size, a fresh command, n_jobs=1) wall time / what it cannot avoid: a fresh import of the"
        " stages plus its runs' training steps (n_jobs_2_ratio: the same at n_jobs=2, the steps shared by 2)",
    ),
    "parallel_speedup_full_study": (1.8, ">=", "`depth` at full size, wall time at n_jobs=1 / at n_jobs=2"),
    "all_studies_seconds": (
        60.0,
        "<=",
        "wall seconds (not a ratio) of the eleven studies at default size, fresh commands one after the other",
    ),
    "gflops": (None, "", "wide step's FLOP rate / a plain float32 matmul's (the practical ceiling)"),
}


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": ", ".join(blas),
        "platform": platform.platform(),
    }


def recurrent_vs_torch(quick: bool) -> dict:
    """The RNN and LSTM rows (benchmarks/recurrent.py)."""
    calls, repeats = (2, 1) if quick else (30, 5)
    rec = recurrent.recurrent_vs_torch(recurrent.QUICK_SHAPES if quick else recurrent.SHAPES, calls, repeats)
    if "skipped" in rec:
        print(f"recurrent_vs_torch skipped: {rec['skipped']}", file=sys.stderr)
    return rec


def probes_overhead(quick: bool) -> dict:
    """probes=full against probes=off, per shape (benchmarks/studies.py)."""
    return {
        "probes_overhead": studies.probes_overhead(epochs=1 if quick else 3, repeats=1 if quick else 3, quick=quick)
    }


def study_timing(quick: bool) -> dict:
    """tracking_overhead and parallel_speedup: the 16-run study at n_jobs 1 and 2 (benchmarks/studies.py)."""
    return studies.study_timing(repeats=1 if quick else 2, quick=quick)


# figures `--only KEY` measures alone (with those measured in the same runs), every other figure kept as the
# JSON file has it
ALONE = {
    "recurrent_vs_torch": lambda quick: {"recurrent_vs_torch": recurrent_vs_torch(quick)},
    "study_efficiency": studies.default_study,  # also parallel_speedup_default_study and memory
    "parallel_speedup_full_study": studies.full_depth_speedup,
    "all_studies_seconds": studies.all_studies,
    "probes_overhead": probes_overhead,
    "tracking_overhead": study_timing,  # also parallel_speedup
}


def collect(quick: bool) -> dict:
    """Run every benchmark; the JSON object the script writes."""
    shapes = steps.QUICK_SHAPES if quick else steps.SHAPES
    calls, repeats = (2, 1) if quick else (30, 5)
    t0 = time.perf_counter()
    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "machine": machine(),
    }
    torch = steps.engine_vs_torch(shapes, calls * 4, repeats)
    if "skipped" in torch:
        print(f"engine_vs_torch skipped: {torch['skipped']}", file=sys.stderr)
    result["engine_vs_torch"] = torch
    result["recurrent_vs_torch"] = recurrent_vs_torch(quick)
    result["engine_vs_sklearn"] = steps.engine_vs_sklearn(epochs=1 if quick else 20, repeats=repeats if quick else 3)
    result["gflops"] = steps.gflops(shapes["wide"], calls, repeats)
    result.update(probes_overhead(quick))
    result.update(study_timing(quick))
    result.update(studies.default_study(quick))
    result.update(studies.full_depth_speedup(quick))
    result.update(studies.all_studies(quick))
    result["seconds"] = time.perf_counter() - t0
    return result


def _fmt(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def verdicts(result: dict) -> list[tuple[str, str, float, str, str, str]]:
    """(key, case, ratio, target, met, details) rows for every measured ratio."""
    rows = []
    for key, (target, op, _) in TARGETS.items():
        if key not in result:  # a figure added since these results were measured (--only keeps old results)
            continue
        value = result[key]
        cases = {"": value} if "ratio" in value or "skipped" in value else value
        for case, v in cases.items():
            if "skipped" in v:
                rows.append((key, case, float("nan"), f"{op} {target}", "skipped", v["skipped"]))
                continue
            met = (
                ""
                if target is None
                else "yes"
                if (v["ratio"] <= target if op == "<=" else v["ratio"] >= target)
                else "NO"
            )
            details = ", ".join(f"{k} {_fmt(x)}" for k, x in v.items() if k != "ratio")
            rows.append((key, case, v["ratio"], f"{op} {target}" if target is not None else "", met, details))
    return rows


def markdown(result: dict) -> str:
    """BENCHMARKS.md: the machine, the table of ratios against their targets, how to reproduce."""
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/run.py` (do not edit by hand). Every ratio is measured side by side",
        "in one run, the contenders interleaved and the best of several repeats kept, because these machines",
        "are shared and noisy.",
        "",
        f"- Date: {result['date']}; the whole run took {result['seconds']:.0f} s"
        + (" (--quick: tiny sizes, timings meaningless)" if result["quick"] else ""),
        f"- Machine: {m['cpu']}, {m['cores']} cores; {m['platform']}",
        f"- Python {m['python']}, NumPy {m['numpy']}, BLAS: {m['blas']}",
    ]
    lines += [
        f"- `{key}` measured alone (`--only {key}`): {a['date']}, {a['seconds']:.0f} s, load average "
        + " / ".join(f"{x:.1f}" for x in a["load_average"])
        + " (1 / 5 / 15 min)"
        for key, a in result.get("measured_alone", {}).items()
    ]
    lines += [
        "",
        "| figure | case | ratio | target | met | measured |",
        "|---|---|---|---|---|---|",
    ]
    for key, case, ratio, target, met, details in verdicts(result):
        lines.append(f"| `{key}` | {case} | {ratio:.3g} | {target} | {met} | {details} |")
    mem = result["memory"]
    lines += [
        "",
        f"Peak resident memory of a {mem['study']} study, workers included: {mem['peak_rss_mib']:.0f} MiB "
        f"(limit {mem['limit_mib']} MiB).",
        "",
        "What each figure measures:",
        "",
    ]
    lines += [
        f"- `{k}`: {what}" + (f" (target {op} {t})" if t is not None else "") for k, (t, op, what) in TARGETS.items()
    ]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "pip install -e '.[bench]'   # PyTorch CPU, for engine_vs_torch and recurrent_vs_torch",
        "python benchmarks/run.py    # ~10 min; writes benchmarks/results.json and this file",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the code in seconds")
    ap.add_argument("--out", type=Path, help="JSON file (default benchmarks/results.json; none with --quick)")
    ap.add_argument("--markdown", type=Path, help="Markdown table (default BENCHMARKS.md; none with --quick)")
    ap.add_argument("--only", choices=sorted(ALONE), help="measure this figure alone; the others stay as in --out")
    args = ap.parse_args()
    out = args.out or (None if args.quick else HERE / "results.json")
    md = args.markdown or (None if args.quick else HERE.parent / "BENCHMARKS.md")
    if args.only:
        if out is None or not out.exists():
            ap.error(f"--only keeps the other figures of an earlier run: no {out or '--out file'}")
        result = json.loads(out.read_text())
        t0 = time.perf_counter()
        measured = ALONE[args.only](args.quick)
        result.update(measured)
        for key in measured:
            result.setdefault("measured_alone", {})[key] = {
                "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "seconds": time.perf_counter() - t0,
                "load_average": os.getloadavg(),
            }
    else:
        result = collect(args.quick)
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text + "\n")
    if md:
        kept = md.read_text().partition(tracking_load.BEGIN)[2] if md.exists() else ""
        md.write_text(markdown(result) + (f"\n{tracking_load.BEGIN}{kept}" if kept else ""))  # the load test's own
    print(text if not out else f"wrote {out}" + (f" and {md}" if md else ""))
    for key, case, ratio, target, met, _ in verdicts(result):
        print(f"{key:18} {case:6} {ratio:8.3g}  {target:7} {met}", file=sys.stderr)


if __name__ == "__main__":
    main()
