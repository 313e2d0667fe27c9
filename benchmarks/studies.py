"""What the instrumentation and the study runner cost: probes, MLflow, parallel jobs, memory."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pipeline import study, tracking, train
from pipeline.harness.paths import CONF_DIR, ROOT
from pipeline.studies import browse

# probes=full vs probes=off in a real train run (evaluation and epoch-end logging included in both)
PROBE_SHAPES = {
    "small": ["model.depth=2", "model.width=128", "train.batch_size=64"],  # digits: 23 steps an epoch
    "deep": [
        "model.depth=20",
        "model.width=256",
        "data=classification",
        "data.n_samples=8000",
        "data.n_features=784",
        "data.n_classes=10",
        "train.batch_size=128",
        "optimizer.lr=0.01",
    ],  # 50 steps of 128 an epoch
}
QUICK_PROBE_SHAPES = {"small": ["model.depth=2", "model.width=8"], "deep": ["model.depth=6", "model.width=8"]}


def compose_config(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def probes_overhead(epochs: int, repeats: int, quick: bool) -> dict:
    """Time per epoch with probes=full / probes=off, minus 1, per shape (MLflow off: probes only)."""
    out = {}
    for name, shape in (QUICK_PROBE_SHAPES if quick else PROBE_SHAPES).items():
        best: dict[str, dict] = {}
        for _ in range(repeats):  # interleaved
            for probes in ("off", "full"):
                r = train.run(
                    compose_config(
                        f"train.epochs={epochs}", "tracking=off", f"probes={probes}", "probes.histograms=false", *shape
                    )
                )
                if probes not in best or r["seconds_per_epoch"] < best[probes]["seconds_per_epoch"]:
                    best[probes] = r
        off, full = (best[p]["seconds_per_epoch"] * best[p]["epochs"] / best[p]["steps"] for p in ("off", "full"))
        out[name] = {
            "ratio": full / off - 1.0,
            "off_ms_per_step": 1e3 * off,
            "full_ms_per_step": 1e3 * full,
            "overrides": " ".join(shape),
        }
    return out


def study_config(store: str, reports: Path, n_jobs: int, quick: bool):
    """The benchmark study: activations at smoke size, 4 activations x 4 seeds = 16 runs (quick: 2 x 1)."""
    cfg = compose_config(
        "study=activations",
        "study.size=smoke",
        f"study.n_jobs={n_jobs}",
        f"tracking.uri={store}",
        f"+study.reports_dir={reports}",
        hydra=True,
    )
    with open_dict(cfg):
        cfg.study.grid = {"model.activation": "sigmoid,relu" if quick else "sigmoid,tanh,relu,elu"}
        cfg.study.sizes.smoke.seed = "0" if quick else "0,1,2,3"
    return cfg


def study_timing(repeats: int, quick: bool) -> dict:
    """The 16-run study at n_jobs=1 and 2 on fresh stores: wall time, MLflow share, speed-up."""
    best: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        for r in range(repeats):
            for n_jobs in (1, 2):
                folder = Path(tmp) / f"{n_jobs}-{r}"
                store = f"sqlite:///{folder}/mlflow.db"
                cfg = study_config(store, folder / "reports", n_jobs, quick)
                # a project has its store, and a study run before its experiment, already: not timed
                tracking.ensure_experiment(store, browse.study_experiment(cfg))
                t0 = time.perf_counter()
                result = study.run(cfg)
                wall = time.perf_counter() - t0
                if result["failed"]:
                    raise RuntimeError(f"benchmark study: {result['failed']} runs failed")
                if n_jobs not in best or wall < best[n_jobs]["wall"]:
                    best[n_jobs] = {"wall": wall, "mlflow": result["tracking_seconds"], "runs": result["runs"]}
    one, two = best[1], best[2]
    return {
        "tracking_overhead": {
            "ratio": one["mlflow"] / one["wall"],
            "mlflow_seconds": one["mlflow"],
            "wall_seconds": one["wall"],
            "runs": one["runs"],
            "n_jobs": 1,
        },
        "parallel_speedup": {
            "ratio": one["wall"] / two["wall"],
            "n_jobs_1_seconds": one["wall"],
            "n_jobs_2_seconds": two["wall"],
            "runs": one["runs"],
            "n_jobs_2_mlflow_seconds_all_processes": two["mlflow"],
        },
    }


def _run_sampling_rss(command: list[str]) -> tuple[float, float, str]:
    """Run a command; its wall time, the peak of its process tree's summed RSS (sampled every 0.1 s), its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()  # a study prints a few lines: the pipes cannot fill up meanwhile
    if proc.returncode:
        raise RuntimeError(f"benchmark study failed: {err.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0, peak, out


def import_seconds() -> float:
    """Wall seconds of a fresh interpreter importing what a study's command needs (its stages): the floor."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pipeline.study, pipeline.train, pipeline.init"], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def training_seconds(store: str) -> tuple[float, int]:
    """The summed `time/train_seconds` (training steps only) of the store's train runs, and their count."""
    client = tracking.client(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.stage = 'train'", max_results=5000)
    return sum(r.data.metrics.get("time/train_seconds", 0.0) for r in runs), len(runs)


def study_command(name: str, size: str, n_jobs: int, folder: str | Path, store: str | Path | None = None) -> list[str]:
    """`python -m pipeline.study` as a user types it, its reports in `folder`/reports and its SQLite store at
    `store` (default `folder`/mlflow.db)."""
    return [
        sys.executable,
        "-m",
        "pipeline.study",
        f"study={name}",
        f"study.size={size}",
        f"study.n_jobs={n_jobs}",
        f"tracking.uri=sqlite:///{store or Path(folder) / 'mlflow.db'}",
        f"+study.reports_dir={Path(folder) / 'reports'}",
    ]


def default_study(quick: bool) -> dict:
    """The `depth` study at default size as a user runs it (a fresh command, fresh store), n_jobs 1 and 2:
    wall times, their ratio, the peak resident memory of the n_jobs=2 run, workers included, and its
    efficiency: wall time / what it cannot avoid (a fresh import of the stages, measured just before, plus its
    runs' training steps, shared by the jobs).

    --quick: the smoke size, only to exercise the code.
    """
    size = "smoke" if quick else "default"
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        for n_jobs in (1, 2):
            floor = import_seconds()
            folder = f"{tmp}/{n_jobs}"
            seconds, rss, printed = _run_sampling_rss(study_command("depth", size, n_jobs, folder))
            out[f"n_jobs_{n_jobs}_seconds"], out[f"n_jobs_{n_jobs}_peak_rss"] = seconds, rss
            mlflow = re.search(r"([\d.]+) s in MLflow", printed)  # the study's own summary line
            out[f"n_jobs_{n_jobs}_mlflow_seconds"] = float(mlflow.group(1)) if mlflow else float("nan")
            train, runs = training_seconds(f"sqlite:///{folder}/mlflow.db")
            out[f"n_jobs_{n_jobs}_import_seconds"], out[f"n_jobs_{n_jobs}_train_seconds"] = floor, train
            out["runs"] = runs
    floor_1 = out["n_jobs_1_import_seconds"] + out["n_jobs_1_train_seconds"]
    floor_2 = out["n_jobs_2_import_seconds"] + out["n_jobs_2_train_seconds"] / 2
    return {
        "parallel_speedup_default_study": {
            "ratio": out["n_jobs_1_seconds"] / out["n_jobs_2_seconds"],
            "n_jobs_1_seconds": out["n_jobs_1_seconds"],
            "n_jobs_2_seconds": out["n_jobs_2_seconds"],
            "study": f"depth ({size})",
            "mlflow_share_n_jobs_1": out["n_jobs_1_mlflow_seconds"] / out["n_jobs_1_seconds"],
        },
        "study_efficiency": {
            "ratio": out["n_jobs_1_seconds"] / floor_1,
            "n_jobs_1_seconds": out["n_jobs_1_seconds"],
            "import_seconds": out["n_jobs_1_import_seconds"],
            "train_seconds": out["n_jobs_1_train_seconds"],
            "n_jobs_2_ratio": out["n_jobs_2_seconds"] / floor_2,
            "n_jobs_2_seconds": out["n_jobs_2_seconds"],
            "runs": out["runs"],
            "study": f"depth ({size})",
        },
        "memory": {
            "peak_rss_mib": out["n_jobs_2_peak_rss"] / 2**20,
            "n_jobs_1_peak_rss_mib": out["n_jobs_1_peak_rss"] / 2**20,
            "limit_mib": 2048,
            "study": f"depth ({size}), n_jobs=2",
        },
    }


# the eleven studies of the first map (issue 14's target: all of them at default size within a minute)
ELEVEN = (
    "depth",
    "activations",
    "init",
    "init_depth",
    "batch_size",
    "learning_rate",
    "optimizers",
    "regularization",
    "clipping",
    "normalization",
    "dead_relu",
)


def all_studies(quick: bool) -> dict:
    """Every one of the eleven studies at default size, one after the other as fresh commands (n_jobs=2, fresh
    stores): the total wall time and each study's. --quick: two of them at smoke size."""
    names, size = (ELEVEN[:2], "smoke") if quick else (ELEVEN, "default")
    each: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        for name in names:
            t0 = time.perf_counter()
            done = subprocess.run(
                study_command(name, size, 2, f"{tmp}/{name}"), cwd=ROOT, capture_output=True, text=True
            )
            if done.returncode:
                raise RuntimeError(f"benchmark study {name} failed: {done.stderr.strip().splitlines()[-1:]}")
            each[f"{name}_seconds"] = time.perf_counter() - t0
    return {"all_studies_seconds": {"ratio": sum(each.values()), "size": size, **each}}


def full_depth_speedup(quick: bool) -> dict:
    """The `depth` study at full size (enough work for the serial parts not to dominate), n_jobs 1 vs 2, fresh
    commands and stores. --quick: smoke size."""
    size = "smoke" if quick else "full"
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        for n_jobs in (1, 2):
            seconds[n_jobs], _, _ = _run_sampling_rss(study_command("depth", size, n_jobs, f"{tmp}/{n_jobs}"))
    return {
        "parallel_speedup_full_study": {
            "ratio": seconds[1] / seconds[2],
            "n_jobs_1_seconds": seconds[1],
            "n_jobs_2_seconds": seconds[2],
            "study": f"depth ({size})",
        }
    }
