"""Many writers, one store: N concurrent processes log batched metrics through gradlab's own TrackedRun.

    python -m benchmarks.tracking_load                       # N = 4, 16, 32 against every setup (~4 min)
    python -m benchmarks.tracking_load --writers 4 --batches 5 --setups local,server-sqlite
    python -m benchmarks.tracking_load --mode train          # N = 4, 16 real `python -m pipeline.train` runs (~12 min)
    python -m benchmarks.tracking_load --mode render         # the BENCHMARKS.md section again from the JSON

Setups: `local` (the project's default: every writer opens the SQLite file itself), `server-sqlite` and
`server-postgres` (an `mlflow server` with 4 workers on SQLite, on PostgreSQL: `pipeline.tracking.team`).
Each writer starts its run, waits for the others, then logs `batches` batches of `keys` x `steps` values
(TrackedRun buffers them and writes one `log_batch` per flush, as a training run does) and ends its run.
Measured per setup and N: throughput (values written / wall time from the start signal to the last end),
p50 / p99 latency of one batch, runs that ended FAILED or stayed RUNNING, and values lost (written by the
writers minus read back from the store: every metric history of every run, counted). Writes
benchmarks/tracking_load.json and its section of BENCHMARKS.md (benchmarks/run.py keeps that section).

`--mode train`: each writer is a real short training run, `python -m pipeline.train` (xor, probes on, 30
epochs, `tracking.max_points=8` so that the dense series are strided as a long run's are), all N started at
once, plus the same N runs with tracking=off as the baseline (what the runs cost without a store). Measured:
wall time from the launch to the last exit, each run's wall time (p50, max), runs FAILED or RUNNING, and values
lost: for each run, what the pipeline promises MLflow (`expected_counts`: from the run's history.json, which has
every value, the Recorder's stride and its last-value rule, and the per-layer profiles) against each metric's
history read back from the store. The mode not run keeps its rows from the last results file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from pipeline import tracking
from pipeline.harness.paths import ROOT
from pipeline.tracking import team as team_server

SETUPS = ("local", "server-sqlite", "server-postgres")
TRAIN_SETUPS = ("off", *SETUPS)  # off: the same runs without a store, the baseline
# a short real run that logs as a long one does: probes on (default), the dense series strided (30 measurements,
# 8 points at most: every 4th, and the last); no figures (drawing is matplotlib's time, not the store's)
TRAIN_ARGS = ("data=xor", "train.epochs=30", "tracking.max_points=8", "tracking.figures=false", "train.progress=false")
MAX_POINTS = 8
# what the training loop logs once (at step 0, per epoch, at the end): never strided; every other series is dense
NOT_DENSE = {
    "epoch", "lr", "train/acc", "time/epoch_seconds", "val/loss", "val/acc", "train/initial_loss", "train/initial_acc",
    "data/chance_acc", "data/chance_loss", "train/final_loss", "train/final_acc", "test/loss", "test/acc",
    "diverged_at_step",
}  # fmt: skip
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


def expected_counts(history: dict[str, list], every: int, max_points: int = MAX_POINTS) -> dict[str, int]:
    """Values per metric a train run sends MLflow, from its history.json (every value): pipeline.harness.recording's
    promise. A dense series (the loss, the probes; measured at the steps train/loss was) keeps every `stride`-th
    dense measurement and its last one, the stride planned as train.py plans it (from the steps per epoch, seen
    at the `epoch` metric's first step, `probes.every` and the epochs); a probe's value at step 0 (before
    training) and the other metrics go whole; the per-layer profiles (not in the history) are computed from it."""
    from pipeline.harness.loop import Loop
    from pipeline.harness.recording import dense_stride, layer_profiles

    epochs = [int(s) for s, _ in history.get("epoch", [])]
    planned = Loop.dense_measurements(epochs[0], 1, every, len(epochs)) if epochs else 0  # n_train / 1 = steps
    stride = dense_stride(planned, max_points)
    dense_steps = [int(s) for s, _ in history.get("train/loss", [])]
    kept = set(dense_steps[::stride])
    counts = {}
    for key, points in history.items():
        steps = [int(s) for s, _ in points]
        if key in NOT_DENSE:
            counts[key] = len(steps)
            continue
        dense = [s for s in steps if s != 0 or key in ("train/loss", "time/train_seconds")]
        last_held = bool(dense) and dense[-1] not in kept  # Recorder.close sends it
        counts[key] = (len(steps) - len(dense)) + sum(s in kept for s in dense) + last_held
    decoded = {k: [(int(s), float(v)) for s, v in pts] for k, pts in history.items()}
    counts.update({key: len(points) for key, points in layer_profiles(decoded).items()})
    return counts


def train_load(uri: str | None, n: int, folder: Path) -> dict:
    """N real train runs started at once against `uri` (None: tracking=off); the row of figures."""
    experiment = f"train-load-{n}-{time.time_ns()}"
    store_args = ["tracking=off"] if uri is None else [f"tracking.uri={uri}", f"tracking.experiment={experiment}"]
    if uri is not None:
        tracking.ensure_experiment(uri, experiment)
    ended: dict[int, float] = {}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.train", *TRAIN_ARGS, f"seed={i}", *store_args,
             f"hydra.run.dir={folder / 'hydra' / experiment / str(i)}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(n)
    ]  # fmt: skip

    def wait(i: int, proc: subprocess.Popen) -> None:
        proc.wait()
        ended[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=wait, args=(i, p)) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = sorted({p.stderr.read().strip().splitlines()[-1] for p in procs if p.returncode != 0 and p.stderr})
    for p in procs:
        if p.stderr:
            p.stderr.close()
    walls = sorted(ended.values())
    row = {
        "writers": n,
        "seconds": round(walls[-1], 2),
        "run_p50_s": round(statistics.median(walls), 2),
        "run_max_s": round(walls[-1], 2),
        "exit_nonzero": sum(p.returncode != 0 for p in procs),
        "writer_errors": errors,
    }
    if uri is None:
        return row
    row.update(train_read_back(uri, experiment, n))
    row["values_per_second"] = round(row["values_written"] / max(row["seconds"], 1e-9))
    return row


def train_read_back(uri: str, experiment: str, n: int) -> dict:
    """The runs' statuses, and per run every metric's history in the store against what the pipeline promised."""
    client = tracking.client(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    expected = found = lost = extra = history_values = 0
    for run in runs:
        history = tracking.download_json(uri, run.info.run_id, "history.json") or {}
        history_values += sum(len(points) for points in history.values())
        promised = expected_counts(history, int(run.data.params["probes.every"]))
        keys = set(promised) | set(run.data.metrics)
        for key in keys:
            got = len(client.get_metric_history(run.info.run_id, key))
            want = promised.get(key, 0)
            expected, found = expected + want, found + min(got, want)
            lost, extra = lost + max(0, want - got), extra + max(0, got - want)
    statuses = [r.info.status for r in runs]
    return {
        "history_values": history_values,
        "values_written": expected,
        "values_read_back": found,
        "values_lost": lost,
        "values_extra": extra,
        "runs_failed": statuses.count("FAILED"),
        "runs_running": statuses.count("RUNNING"),
        "runs_missing": n - len(runs),
    }


@contextlib.contextmanager
def store(setup: str, folder: Path, port: int, pg_port: int):
    """The tracking URI of a setup, its server started and always stopped."""
    if setup == "off":
        yield None
        return
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


def train_markdown(rows: list[dict]) -> str:
    """The train-run table: each setup's wall times beside the same runs with tracking=off."""
    off = {r["writers"]: r for r in rows if r["setup"] == "off"}
    head = (
        "| setup | runs | s (all ended) | vs off | run p50 s | run max s | MLflow values | values/s | FAILED | RUNNING "
        "| exit != 0 | lost | extra |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        base = off.get(r["writers"])
        ratio = f"{r['seconds'] / base['seconds']:.2f}x" if base and r["setup"] != "off" else "-"
        lines.append(
            f"| {r['setup']} | {r['writers']} | {r['seconds']} | {ratio} | {r['run_p50_s']} | {r['run_max_s']} | "
            f"{r.get('values_written', '-')} | {r.get('values_per_second', '-')} | {r.get('runs_failed', '-')} | "
            f"{r.get('runs_running', '-')} | {r['exit_nonzero']} | {r.get('values_lost', '-')} | "
            f"{r.get('values_extra', '-')} |\n"
        )
    return head + "".join(lines)


BEGIN, END = "<!-- tracking load: benchmarks/tracking_load.py writes it -->", "<!-- end of tracking load -->"


def section(result: dict) -> str:
    """BENCHMARKS.md's "Many writers, one store": each mode's table and, per setup, how it scales from the fewest
    writers to the most (computed from the rows), then the findings written down with the figures."""
    lines = ["## Many writers, one store (`python -m benchmarks.tracking_load`)", ""]
    synthetic = result.get("synthetic")
    if synthetic:
        rows = synthetic["rows"]
        lines += [
            f"Synthetic writers ({synthetic['date']}; {synthetic['note']}). Each writer: {synthetic['batches']} "
            f"batches of {synthetic['keys']} keys x {synthetic['steps']} steps through TrackedRun (one `log_batch` "
            "per flush, as a training run); every value read back from the store.",
            "",
            markdown(rows),
        ]
        for setup in dict.fromkeys(r["setup"] for r in rows):
            mine = sorted((r for r in rows if r["setup"] == setup), key=lambda r: r["writers"])
            lo, hi = mine[0], mine[-1]
            lines.append(
                f"- `{setup}`: {hi['writers']} writers reach {hi['values_per_second'] / lo['values_per_second']:.2f}x "
                f"the throughput of {lo['writers']}; batch p99 {lo['batch_p99_ms']:.0f} -> {hi['batch_p99_ms']:.0f} "
                f"ms; {sum(r['values_lost'] for r in mine)} values lost, "
                f"{sum(r['runs_failed'] + r['runs_running'] for r in mine)} runs FAILED or RUNNING."
            )
        lines.append("")
    train = result.get("train")
    if train:
        lines += [
            f"Real train runs as writers (`--mode train`; {train['date']}; {train['note']}). Each writer: "
            f"`python -m pipeline.train {' '.join(train['args'])} seed=i`, all N started at once; `off` is the same "
            'runs with tracking=off. "MLflow values": what the pipeline promises MLflow (from each run\'s '
            "history.json, which has every value: the dense series strided, their last value, the once-logged "
            "metrics, the layer profiles), read back per metric; lost = promised but missing, extra = more than "
            "promised.",
            "",
            train_markdown(train["rows"]),
            "",
        ]
    if result.get("findings"):
        lines += ["Where each setup stops scaling on this 2-core machine, and why:", ""]
        lines += [f"- {finding}" for finding in result["findings"]]
    return "\n".join(lines).rstrip("\n") + "\n"


def previous(path: Path) -> dict:
    """The last results file (its older layout: the synthetic rows at the top level)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if "rows" in data:
        data = {"synthetic": {k: data[k] for k in ("date", "note", "batches", "keys", "steps", "rows")}}
    return data


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
    parser.add_argument(
        "--mode",
        choices=("synthetic", "train", "render"),
        default="synthetic",
        help="synthetic writers, real train runs, or only the BENCHMARKS.md section again from the results file",
    )
    parser.add_argument("--writers", help="N per row (default: 4,16,32 synthetic; 4,16 train)")
    parser.add_argument("--setups", help=f"default: {','.join(SETUPS)} ({','.join(TRAIN_SETUPS)} for train)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--port", type=int, default=5091)
    parser.add_argument("--pg-port", type=int, default=5491)
    parser.add_argument("--note", default=f"{os.cpu_count()} cores", help="the conditions, for the record")
    parser.add_argument("--out", default=str(RESULTS), help="the JSON results file ('': none)")
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"), help="where the section goes")
    args = parser.parse_args(argv)
    train = args.mode == "train"
    writers = args.writers or ("4,16" if train else "4,16,32")
    setups = args.setups or ",".join(TRAIN_SETUPS if train else SETUPS)
    result = previous(Path(args.out)) if args.out else {}
    rows = []
    if args.mode != "render":
        with tempfile.TemporaryDirectory(prefix="gradlab-load-") as tmp, contextlib.ExitStack() as stores:
            Path(tmp).chmod(0o755)  # run as root, PostgreSQL runs as `postgres`: it must reach its folder
            uris = {  # every store up at once (each server on its own ports), so that the setups interleave
                setup: stores.enter_context(store(setup, Path(tmp), args.port + i, args.pg_port + i))
                for i, setup in enumerate(setups.split(","))
            }
            # N by N, each setup in turn: the setups of a row of N measured minutes apart, under the same load
            for n in (int(x) for x in writers.split(",")):
                for setup, uri in uris.items():
                    measured = (
                        train_load(uri, n, Path(tmp)) if train else load(uri, n, args.batches, args.keys, args.steps)
                    )
                    rows.append({"setup": setup, **measured})
                    print(json.dumps(rows[-1]), flush=True)
        rows.sort(key=lambda r: (setups.split(",").index(r["setup"]), r["writers"]))
        common = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": args.note, "rows": rows}
        if train:
            result["train"] = {**common, "args": list(TRAIN_ARGS)}
        else:
            result["synthetic"] = {**common, "batches": args.batches, "keys": args.keys, "steps": args.steps}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        write_section(Path(args.markdown), section(result))
    print(section(result))
    return rows


if __name__ == "__main__":
    main()
