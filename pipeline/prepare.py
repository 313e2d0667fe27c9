"""python -m pipeline.prepare: build the data set, split and standardize it, save it with a sidecar."""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.data.prepared import PREPARED_DIR, data_label, load_or_build, paths
from pipeline.harness.cli import stage_main
from pipeline.harness.validate import validate


def run(cfg: DictConfig) -> dict:
    """Prepare `data.*`; returns the sidecar, the file path and whether it was reused."""
    validate(cfg, groups=("data",))
    _, meta = load_or_build(cfg.data, PREPARED_DIR)
    return dict(meta, path=str(paths(cfg.data)[0]))


def summary_line(result: dict) -> str:
    sizes = result["split_sizes"]
    state = "reused" if result["reused"] else "built"
    name = data_label(result["config"]) or result["config"]["name"]  # a user's file by its name: wine.csv
    if result.get("task") == "regression":
        what = f"regression (a constant predictor's MSE {result['target_stats']['train']['var']:.3f})"
    else:
        what = f"{result['n_classes']} classes"
    steps = f"{result['seq_len']} steps of " if result.get("seq_len") else ""
    return (
        f"{name}: {state} {result['path']} — train {sizes['train']}, val {sizes['val']}, "
        f"test {sizes['test']}; {steps}{result['n_features']} feature{'s' * (result['n_features'] != 1)}, {what}"
    )


main = stage_main(run, summary_line)

if __name__ == "__main__":
    main()
