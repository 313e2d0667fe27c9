"""Many writers, one store: N concurrent processes log batched metrics through gradlab's own TrackedRun.

    python -m benchmarks.tracking_load                       # N = 4, 16, 32 against every setup (~4 min)
    python -m benchmarks.tracking_load --writers 4 --batches 5 --setups local,server-sqlite

Setups: `local` (the project's default: every writer opens the SQLite file itself), `server-sqlite` and
`server-postgres` (an `mlflow server` with 4 workers on SQLite, on PostgreSQL: `pipeline.tracking.team`).
Each writer starts its run, waits for the others, then logs `batches` batches of `keys` x `steps` values
(TrackedRun buffers them and writes one `log_batch` per flush, as a training run does) and ends its run.
Measured per setup and N: throughput (values written / wall time from the start signal to the last end),
p50 / p99 latency of one batch, runs that ended FAILED or stayed RUNNING, and values lost (written by the
writers minus read back from the store: every metric history of every run, counted). Writes
benchmarks/tracking_load.json and its section of BENCHMARKS.md (benchmarks/run.py keeps that section).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

from pipeline import tracking
from pipeline.harness.paths import ROOT
from pipeline.tracking import team as team_server

SETUPS = ("local", "server-sqlite", "server-postgres")
RESULTS = ROOT / "benchmarks" / "tracking_load.json"
START_TIMEOUT = 300.0  # 32 writers each opening the store (SQLite: schema check) on 2 cores


def writer(uri: str, experiment: str, index: int, batches: int, keys: int, steps: int, go, out) -> None:
    """One writer process: a run, `batches` flushes of keys x steps values, the run ended; its figures to `out`."""
    record: dict = {"index": index, "written": 0, "latencies": [], "error": None}
    run = tracking.TrackedRun(uri, experiment, run_name=f"writer {index:02d}", tags={"load": "writer"})
    try:
        with run:
            run.start()
            record["run_id"] = run.run_id
            go.wait(START_TIMEOUT)
            record["t0"] = time.time()
            for b in range(batches):
                for s in range(steps):
                    run.log_metrics(
                        {f"load/k{k:02d}": float(index + b + s * 1e-3 + k) for k in range(keys)}, b * steps + s
                    )
                t = time.perf_counter()
                run.flush()
                record["latencies"].append(time.perf_counter() - t)
                record["written"] += keys * steps
        record["t1"] = time.time()
    except BaseException as e:  # counted and reported, not raised: the other writers go on
        record["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        record["trace"] = traceback.format_exc()[-2000:]
        record["t1"] = time.time()
    out.put(record)


def read_back(uri: str, experiment: str, run_ids: list[str], keys: int) -> tuple[int, dict[str, int]]:
    """Values in the store for these runs (every key's full history), and the runs' statuses."""
    client = tracking.client(uri)
    found, statuses = 0, {}
    for run_id in run_ids:
        statuses[run_id] = client.get_run(run_id).info.status
        for k in range(keys):
            found += len(client.get_metric_history(run_id, f"load/k{k:02d}"))
    return found, statuses


def load(uri: str, n: int, batches: int, keys: int, steps: int) -> dict:
    """N writers against `uri` at once; the row of figures."""
    experiment = f"load-{n}-{time.time_ns()}"
    tracking.ensure_experiment(uri, experiment)  # the schema made once, before the writers race
    ctx = mp.get_context("fork")  # the parent has imported MLflow: the writers start in milliseconds
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(uri, experiment, i, batches, keys, steps, go, out)) for i in range(n)]
    for p in procs:
        p.start()
    client = tracking.client(uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    deadline = time.monotonic() + START_TIMEOUT
    while len(client.search_runs([exp_id], max_results=1000)) < n and time.monotonic() < deadline:
        time.sleep(0.2)  # every run created: the clock starts when all write at once
    go.set()
    records = [out.get(timeout=START_TIMEOUT + 600) for _ in procs]
    for p in procs:
        p.join(30)
    t0 = min(r.get("t0", r["t1"]) for r in records)
    t1 = max(r["t1"] for r in records)
    latencies = sorted(x for r in records for x in r["latencies"])
    written = sum(r["written"] for r in records)
    run_ids = [r["run_id"] for r in records if r.get("run_id")]
    found, statuses = read_back(uri, experiment, run_ids, keys)
    return {
        "writers": n,
        "values_written": written,
        "values_read_back": found,
        "values_lost": written - found,
        "seconds": round(t1 - t0, 3),
        "values_per_second": round(written / max(t1 - t0, 1e-9)),
        "batch_p50_ms": round(1e3 * statistics.median(latencies), 1) if latencies else None,
        "batch_p99_ms": round(1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
        if latencies
        else None,
        "runs_failed": sum(s == "FAILED" for s in statuses.values()),
        "runs_running": sum(s == "RUNNING" for s in statuses.values()),
        "runs_missing": n - len(run_ids),
        "writer_errors": sorted({r["error"] for r in records if r["error"]}),
    }


@contextlib.contextmanager
def store(setup: str, folder: Path, port: int, pg_port: int):
    """The tracking URI of a setup, its server started and always stopped."""
    if setup == "local":
        yield f"sqlite:///{folder / 'local' / 'mlflow.db'}"
        return
    backend = setup.removeprefix("server-")
    t = team_server.Team(folder / setup, port=port, pg_port=pg_port, workers=4, backend=backend)
    try:
        team_server.start(t)
        yield t.url
    finally:
        team_server.stop(t)


def markdown(rows: list[dict]) -> str:
    """The table BENCHMARKS.md shows."""
    head = (
        "| setup | writers | values | s | values/s | batch p50 ms | batch p99 ms | FAILED | RUNNING | lost |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    return head + "".join(
        f"| {r['setup']} | {r['writers']} | {r['values_written']} | {r['seconds']} | {r['values_per_second']} | "
        f"{r['batch_p50_ms']} | {r['batch_p99_ms']} | {r['runs_failed']} | {r['runs_running']} | {r['values_lost']} |\n"
        for r in rows
    )


BEGIN, END = "<!-- tracking load: benchmarks/tracking_load.py writes it -->", "<!-- end of tracking load -->"


def section(result: dict) -> str:
    """BENCHMARKS.md's "Many writers, one store": the table and, per setup, how it scales from the fewest
    writers to the most (computed from the rows)."""
    rows = result["rows"]
    lines = [
        "## Many writers, one store (`python -m benchmarks.tracking_load`)",
        "",
        f"- Date: {result['date']}; {result['note']}",
        f"- Each writer: {result['batches']} batches of {result['keys']} keys x {result['steps']} steps through "
        "TrackedRun (one `log_batch` per flush, as a training run); every value read back from the store.",
        "",
        markdown(rows),
    ]
    for setup in dict.fromkeys(r["setup"] for r in rows):
        mine = sorted((r for r in rows if r["setup"] == setup), key=lambda r: r["writers"])
        lo, hi = mine[0], mine[-1]
        lines.append(
            f"- `{setup}`: {hi['writers']} writers reach {hi['values_per_second'] / lo['values_per_second']:.2f}x "
            f"the throughput of {lo['writers']}; batch p99 {lo['batch_p99_ms']:.0f} -> {hi['batch_p99_ms']:.0f} ms; "
            f"{sum(r['values_lost'] for r in mine)} values lost, "
            f"{sum(r['runs_failed'] + r['runs_running'] for r in mine)} runs FAILED or RUNNING."
        )
    return "\n".join(lines) + "\n"


def write_section(benchmarks_md: Path, text: str) -> None:
    """Replace the section between the markers in BENCHMARKS.md (appended the first time)."""
    content = benchmarks_md.read_text() if benchmarks_md.exists() else ""
    block = f"{BEGIN}\n{text}{END}\n"
    if BEGIN in content and END in content:
        head, rest = content.split(BEGIN, 1)
        content = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        content = content.rstrip("\n") + "\n\n" + block
    benchmarks_md.write_text(content)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="4,16,32")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--port", type=int, default=5091)
    parser.add_argument("--pg-port", type=int, default=5491)
    parser.add_argument("--note", default=f"{os.cpu_count()} cores", help="the conditions, for the record")
    parser.add_argument("--out", default=str(RESULTS), help="the JSON results file ('': none)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gradlab-load-") as tmp:
        Path(tmp).chmod(0o755)  # run as root, PostgreSQL runs as `postgres`: it must reach its folder
        for setup in args.setups.split(","):
            with store(setup, Path(tmp), args.port, args.pg_port) as uri:
                for n in (int(x) for x in args.writers.split(",")):
                    row = {"setup": setup, **load(uri, n, args.batches, args.keys, args.steps)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": args.note,
        "batches": args.batches,
        "keys": args.keys,
        "steps": args.steps,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        write_section(ROOT / "BENCHMARKS.md", section(result))
    print(section(result))
    return rows


if __name__ == "__main__":
    main()
