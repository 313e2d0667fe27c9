"""Files a train or init run leaves behind when `export=<folder>`: what DVC tracks, diffs and plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from pipeline.engine import layer_name
from pipeline.harness import plots
from pipeline.harness.recording import History


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _finite(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def verdict_flags(labels: list[str]) -> dict[str, int]:
    """verdict labels as 0/1 numbers, so `dvc metrics diff` can compare them."""
    return {
        f"verdict/{v}": int(v in labels)
        for v in ("healthy", "vanishing", "exploding", "dead", "saturated", "diverged", "symmetric")
    }


def train_files(folder: str | Path, history: History, result: dict) -> None:
    """metrics.json (last values), loss.csv (per step), grad_norm.csv (per layer, last step), loss_curves.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    latest = {k: pts[-1][1] for k, pts in history.items() if pts}
    keep = ("train/", "val/", "test/", "grad_norm/total", "dead_relu/total", "sparsity/total", "diverged_at_step")
    metrics = {k: v for k, v in _finite(latest).items() if k.startswith(keep)}
    metrics.update(verdict_flags(result["verdict"]), seconds_per_epoch=result["seconds_per_epoch"])
    (folder / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2, sort_keys=True))
    series = {k: dict(history.get(k, [])) for k in ("train/loss", "val/loss", "val/acc")}
    steps = sorted(set().union(*series.values()))
    _write_csv(
        folder / "loss.csv",
        ["step", "train_loss", "val_loss", "val_acc"],
        [
            {
                "step": s,
                "train_loss": series["train/loss"].get(s, ""),
                "val_loss": series["val/loss"].get(s, ""),
                "val_acc": series["val/acc"].get(s, ""),
            }
            for s in steps
        ],
    )
    layers = sorted(k for k in latest if k.startswith("grad_norm/layer_"))
    _write_csv(
        folder / "grad_norm.csv",
        ["layer", "grad_norm"],
        [{"layer": int(k.rsplit("_", 1)[1]), "grad_norm": latest[k]} for k in layers],
    )
    plots.save(plots.loss_curves(history, title="loss and accuracy"), folder / "loss_curves.png")


def init_files(folder: str | Path, result: dict) -> None:
    """metrics.json (scale ratios, verdict), depth_profile.csv (per layer: act std, theory, grad std), PNG."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    act, grad, theory = result["act_std"], result["grad_std"], result["theory_act_std"]
    hidden = len(act) - 1
    metrics = {
        "act_std/first": act[0],
        "act_std/last_hidden": act[hidden - 1] if hidden else math.nan,
        "grad_std/first": grad[0],
        "grad_std/last_hidden": grad[hidden - 1] if hidden else math.nan,
        "init/loss": result["metrics"].get("init/loss", math.nan),
    }
    if hidden >= 2:
        metrics["act_std_ratio/last_over_first"] = act[hidden - 1] / act[0] if act[0] else math.nan
        metrics["grad_std_ratio/first_over_last"] = grad[0] / grad[hidden - 1] if grad[hidden - 1] else math.nan
    metrics.update(verdict_flags(result["verdict"]))
    (folder / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2, sort_keys=True))
    _write_csv(
        folder / "depth_profile.csv",
        ["layer", "act_std", "theory_act_std", "grad_std"],
        [
            {"layer": i + 1, "act_std": act[i], "theory_act_std": theory[i] if theory else "", "grad_std": grad[i]}
            for i in range(len(act))
        ],
    )
    plots.save(
        plots.depth_profile(
            {"activation std": act, "gradient std (dL/dz)": grad},
            theory=theory,
            title=f"per layer at initialization ({layer_name(len(act))} = output)",
        ),
        folder / "depth_profile.png",
    )
