"""Per-step cost of the instrumentation: probes off / default / full, with and without MLflow.

    python benchmarks/probe_overhead.py [--epochs 5 --repeats 3 --shape small|deep|both]

Each configuration runs `repeats` times interleaved; the best time per epoch is reported with its
ratio to probes=off, and the share of the run's wall time spent inside MLflow calls.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from hydra import compose, initialize_config_dir

from pipeline import train
from pipeline.paths import CONF_DIR

SHAPES = {
    "small": ["model.depth=2", "model.width=64"],  # digits, batch 64: 20 steps an epoch
    "deep": ["model.depth=20", "model.width=256", "data=classification", "data.n_samples=20000",
             "train.batch_size=128", "optimizer.lr=0.01"],  # 110 steps of 128 an epoch
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    args = ap.parse_args()
    store = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
    variants = {"off": ["probes=off", "tracking=off"], "default": ["probes=default", "tracking=off"],
                "full": ["probes=full", "tracking=off"], "default+mlflow": ["probes=default", f"tracking.uri={store}"],
                "full+mlflow": ["probes=full", f"tracking.uri={store}"]}
    report = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        train.run(compose("config", overrides=["train.epochs=1", f"tracking.uri={store}"]))  # create the store
        for shape in (SHAPES if args.shape == "both" else [args.shape]):
            best: dict[str, dict] = {}
            for _ in range(args.repeats):
                for name, extra in variants.items():
                    r = train.run(compose("config", overrides=[f"train.epochs={args.epochs}", *SHAPES[shape], *extra]))
                    if name not in best or r["seconds_per_epoch"] < best[name]["seconds_per_epoch"]:
                        best[name] = r
            off = best["off"]["seconds_per_epoch"]
            report[shape] = {name: {"ms_per_epoch": 1e3 * r["seconds_per_epoch"],
                                    "ratio_to_off": r["seconds_per_epoch"] / off,
                                    "ms_per_step": 1e3 * r["seconds_per_epoch"] * r["epochs"] / r["steps"],
                                    "mlflow_share_of_run": r["tracking_seconds"] / r["seconds"]}
                             for name, r in best.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
